"""Continued pretraining's inputs: the corpus file read whole and checked (text, JSONL with a
text field, Parquet with a text column, gzipped or not), each bad corpus one sentence naming
the file and line; the chunks cut from token ids; the schedule's row; the CLI's and the Train
tab's corpus, checked on the server as for the CLI."""

from __future__ import annotations

import gzip
import json
from argparse import Namespace
from types import SimpleNamespace

import pandas as pd
import pytest

from rlhf.auth import create_user
from rlhf.collect.formats import FormatError, read_corpus_file
from rlhf.train.schedule import schedule

from helpers import app_context, password

CAP = 1 << 20


def test_a_text_file_is_one_document_and_may_be_gzipped(tmp_path):
    text = "The zarnel valve sits behind panel 1.\n\nTurn its screw until the lamp glows amber.\n"
    plain, packed = tmp_path / "manual.txt", tmp_path / "manual.md.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        frame = read_corpus_file(path, CAP)
        assert list(frame["text"]) == [text] and list(frame["document"]) == [0] and list(frame["line"]) == [1]


def test_jsonl_and_parquet_give_a_document_per_line_or_row(tmp_path):
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text('{"text": "first", "source": "a"}\n\n{"text": "second"}\n')
    frame = read_corpus_file(jsonl, CAP)
    assert list(frame["text"]) == ["first", "second"] and list(frame["line"]) == [1, 3]
    table = tmp_path / "notes.parquet"
    pd.DataFrame({"text": ["one", "two", "three"], "id": [1, 2, 3]}).to_parquet(table)
    assert list(read_corpus_file(table, CAP)["text"]) == ["one", "two", "three"]


@pytest.mark.parametrize("name, content, reason", [
    ("notes.jsonl", '{"text": "ok"}\n{"body": "x", "id": 2}\n', r"notes\.jsonl, line 2: has no text field \(its fields:"
                                                               r" body, id\)\.$"),
    ("notes.jsonl", '{"text": "ok"}\n{"text": "   "}\n', r"notes\.jsonl, line 2: text is empty\.$"),
    ("notes.jsonl", '{"text": 7}\n', r"notes\.jsonl, line 1: text must be text, got 7\.$"),
    ("notes.jsonl", '{"text": "ok"}\nnot json\n', r"notes\.jsonl, line 2: not valid JSON"),
    ("notes.jsonl", "\n\n", r"notes\.jsonl: the corpus holds no text\.$"),
    ("empty.txt", " \n\t\n", r"empty\.txt: the corpus holds no text\.$"),
    ("notes.csv", "text\nhello\n", r"notes\.csv: unsupported corpus type '\.csv'; supported: \.txt, \.md, \.jsonl,"),
])
def test_a_bad_corpus_is_one_sentence_with_its_file_and_line(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(FormatError, match=reason):
        read_corpus_file(path, CAP)


def test_a_parquet_without_a_text_column_a_missing_file_and_an_oversize_one_are_refused(tmp_path):
    table = tmp_path / "rows.parquet"
    pd.DataFrame({"body": ["x"]}).to_parquet(table)
    with pytest.raises(FormatError, match=r"rows\.parquet: has no text column \(its columns: body\)\.$"):
        read_corpus_file(table, CAP)
    with pytest.raises(FormatError, match=r"gone\.txt: cannot be read \(No such file or directory\)\.$"):
        read_corpus_file(tmp_path / "gone.txt", CAP)
    big = tmp_path / "big.txt"
    big.write_text("word " * 300)
    with pytest.raises(FormatError, match=r"big\.txt: is [\d.]+ KiB, more than the 1 KiB a corpus may hold"):
        read_corpus_file(big, 1024)
    bomb = tmp_path / "bomb.txt.gz"   # small on disk, past the cap once decompressed
    bomb.write_bytes(gzip.compress(b"a" * 5000))
    with pytest.raises(FormatError, match=r"bomb\.txt\.gz: holds [\d.]+ KiB of text, more than the 1 KiB"):
        read_corpus_file(bomb, 1024)


def test_chunks_join_the_documents_with_end_of_text_and_cut_to_length():
    from rlhf.train.pretrain import chunks_of

    assert chunks_of([[1, 2, 3], [4, 5]], 0, 3) == [[1, 2, 3], [0, 4, 5]]  # the lone last token (0) is dropped
    assert chunks_of([[1, 2, 3], [4]], None, 2) == [[1, 2], [3, 4]]
    with pytest.raises(Exception, match="max_length must be at least 2"):
        chunks_of([[1, 2]], 0, 1)


def test_the_schedule_sizes_pretrain_from_its_chunks():
    decided = schedule(20, "pretrain", "lora", 4, {})
    assert decided.settings == {"learning_rate": 2e-4, "num_train_epochs": 8} and decided.steps == 40
    assert "continued pretraining with LoRA" in schedule(20, "pretrain", "lora", 4, {}, what="chunks").reason
    assert "20 chunks" in schedule(20, "pretrain", "lora", 4, {}, what="chunks").reason


def test_the_cli_sends_the_corpus_as_a_path_the_server_can_read(tmp_path, monkeypatch):
    from app.cli_jobs import job_request

    monkeypatch.chdir(tmp_path)
    args = Namespace(method="pretrain", base=None, reward=None, config=None, set=["max_length=64"],
                     prompt_sets=None, categories=None, annotators=None, rounds=None, since=None, until=None,
                     min_agreement=None, corpus="manual.txt")
    request = job_request(args, "cli")
    assert request.corpus == str(tmp_path / "manual.txt") and request.settings == {"max_length": 64}


def test_the_train_tab_offers_the_corpus_upload_for_pretrain_and_checks_it_on_the_server(workbench, tmp_path):
    from app.tabs import train

    shown = train.method_changed("pretrain")
    assert shown[3]["visible"] is True and shown[4]["visible"] is False  # the upload instead of the selection
    shown = train.method_changed("dpo")
    assert shown[3]["visible"] is False and shown[4]["visible"] is True
    create_user(workbench.store, "rita", "researcher", password("rita"))
    ctx, request = app_context(workbench), SimpleNamespace(username="rita")
    corpus = tmp_path / "manual.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"Section {i}: the zarnel valve."}) for i in range(3)))
    values = [None] * len(train.KEYS)
    # the selection widgets still hold a choice made for another method: a corpus method sends none
    form = ["pretrain", None, None, ["default"], [], [], "", "", 0.0, ""]
    said = train.preview_job(ctx, *form, str(corpus), values, request)
    characters = sum(len(f"Section {i}: the zarnel valve.") for i in range(3))
    assert said.startswith(f"The corpus manual.jsonl gives 3 documents of {characters} characters (base base)"), said
    refused = train.preview_job(ctx, *form, None, values, request)
    assert refused.startswith("Refused: pretrain trains on a corpus file and none was given"), refused
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    note, job_id = train.launch_job(ctx, *form, str(bad), values, request)
    assert job_id is None and note.startswith("Refused: The corpus ") and "bad.jsonl, line 1: has no text field" in note
    assert list(workbench.home.jobs_dir.iterdir()) == []
    note, job_id = train.launch_job(ctx, *form, str(corpus), values, request)
    assert job_id is not None, note
    assert ctx.jobs.get(job_id)["spec"]["corpus"]["documents"] == 3
    # another method never takes the corpus a hidden upload still holds
    form[0] = "sft"
    assert "corpus" not in train.preview_job(ctx, *form, str(corpus), values, request)


def test_the_perplexity_is_exp_of_the_mean_loss_per_token_and_padding_changes_nothing(tiny_model_dir):
    import math

    import torch

    from rlhf.modeling.loading import load_causal_lm
    from rlhf.modeling.logprobs import perplexity

    model = load_causal_lm(tiny_model_dir)
    short, long = [5, 80, 300, 41], [7, 9, 11, 250, 1000, 33, 2]
    with torch.no_grad():
        losses = {len(c): float(model(input_ids=torch.tensor([c]), labels=torch.tensor([c])).loss) for c in (short, long)}
    value, tokens = perplexity(model, [short], pad_id=0)
    assert tokens == 3 and value == pytest.approx(math.exp(losses[4]), rel=1e-4)
    together, tokens = perplexity(model, [short, long], pad_id=0, batch_size=2)  # the short one right-padded
    assert tokens == 9
    assert together == pytest.approx(math.exp((3 * losses[4] + 6 * losses[7]) / 9), rel=1e-4)
