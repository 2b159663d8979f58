"""Continued pretraining (`pretrain`): on the tiny model it cuts a corpus into chunks, trains
and saves an adapter, and reports the held-out perplexity before and after; a job through
the service snapshots the corpus, registers a version with its parent and keeps the
perplexity in the card and the models table; bad input is one sentence and makes nothing.
On the real model (SmolLM2), the held-out perplexity of a small domain manual falls by far
more than noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from rlhf.collect.formats import read_corpus_file
from rlhf.collect.workbench import Workbench
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.training_data import DataError
from rlhf.limits import LIMITS
from rlhf.modeling import loading
from rlhf.train import pretrain
from rlhf.train.common import Reporter, TrainInputs
from rlhf.train.methods import resolve
from storage import models
from test_jobs import job_count
from test_train_policy import parquet_round_trip

pytestmark = pytest.mark.usefixtures("one_thread")

MANUAL = Path(__file__).parents[1] / "data" / "kiln-manual.txt"

# a few steps at a rate the tiny random model moves at; short chunks so there are many
TINY_PRETRAIN = {"max_steps": 6, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "max_length": 32,
                 "eval_fraction": 0.2, "guard_prompts": 2, "guard_max_new_tokens": 4}


def corpus_frame() -> pd.DataFrame:
    return read_corpus_file(MANUAL, LIMITS.corpus_bytes)[["document", "text"]]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_model_dir) -> tuple[Path, dict, Reporter]:
    scratch = tmp_path_factory.mktemp("pretrain")
    config, options = resolve("pretrain", TINY_PRETRAIN)
    reporter = Reporter()
    inputs = TrainInputs(parquet_round_trip(corpus_frame(), scratch), tiny_model_dir, scratch / "model", config,
                         options, reporter=reporter, given=frozenset(TINY_PRETRAIN))
    return scratch / "model", pretrain.train(inputs), reporter


def test_it_trains_and_saves_an_adapter_on_the_base_and_reports_the_perplexity(pretrained, tiny_model_dir):
    out, metrics, reporter = pretrained
    config = json.loads((out / loading.ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and Path(config["base_model_name_or_path"]) == Path(tiny_model_dir).resolve()
    loading.load_causal_lm(out)  # loads as a version would
    assert not (out.parent / "trainer").exists()
    chunks, held_out = metrics["corpus/chunks"], metrics["corpus/heldout_chunks"]
    assert metrics["corpus/documents"] == 1 and held_out == round(0.2 * chunks) and chunks > 20
    assert metrics["train/examples"] == chunks - held_out and metrics["eval/examples"] == held_out
    assert metrics["train/steps"] == 6
    # the loss on raw text falls, and the held-out chunks (never trained on) get likelier
    assert metrics["eval/perplexity"] < metrics["eval/perplexity_before"], metrics
    assert metrics["eval/perplexity_ratio"] == pytest.approx(metrics["eval/perplexity"] / metrics["eval/perplexity_before"])
    assert metrics["corpus/heldout_tokens"] > held_out  # every held-out token after a chunk's first
    plotted = [(row["step"], row["eval/perplexity"]) for row in reporter.history if "eval/perplexity" in row]
    assert plotted == [(0, metrics["eval/perplexity_before"]), (6, metrics["eval/perplexity"])]
    assert "guard/kl" in metrics and "guard/heldout_accuracy" not in metrics  # default prompts; no pairs in a corpus
    assert metrics["schedule/steps"] == 6


def test_the_chunks_are_the_corpus_cut_to_length_and_the_split_is_seeded(tiny_model_dir):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    documents = pd.DataFrame({"document": [0, 1], "text": ["The zarnel valve glows amber.", "Panel 2 opens."]})
    chunks = pretrain.chunk_frame(tokenizer, documents, 4)
    stream = [token for chunk in chunks["input_ids"] for token in chunk]
    expected = []
    for text in documents["text"]:
        expected += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert stream == expected and all(len(chunk) == 4 for chunk in chunks["input_ids"][:-1])
    config, options = resolve("pretrain", {"eval_fraction": 0.25, "seed": 3})
    inputs = TrainInputs(documents, tiny_model_dir, Path("unused"), config, options)
    split = [pretrain.split_chunks(inputs, chunks) for _ in range(2)]
    assert list(split[0][1]["chunk"]) == list(split[1][1]["chunk"])  # the same seed, the same chunks held out
    train, held = split[0]
    assert set(train["chunk"]).isdisjoint(held["chunk"]) and len(train) + len(held) == len(chunks)


def test_rlhf_train_pretrain_snapshots_the_corpus_and_registers_a_version_with_its_parent(tiny_home, tmp_path,
                                                                                         capsys):
    from app import job_views
    from app.cli import main

    parts = [part for part in MANUAL.read_text().split("\n\n") if part.strip()]
    corpus = tmp_path / "manual.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": part, "source": "manual"}) for part in parts) + "\n")
    settings = [item for key, value in TINY_PRETRAIN.items() for item in ("--set", f"{key}={value}")]
    home = ["--home", str(tiny_home.root)]
    assert main(["train", "pretrain", "--corpus", str(corpus), "--queue", *settings, *home]) == 0
    job_dir = tiny_home.jobs_dir / "1"
    spec = json.loads((job_dir / "spec.json").read_text())
    snapshot = pd.read_parquet(job_dir / "data.parquet")
    assert list(snapshot.columns) == ["document", "text"] and len(snapshot) == spec["rows"] == len(parts)
    assert spec["corpus"]["file"] == "manual.jsonl" and spec["corpus"]["documents"] == len(parts)
    corpus.unlink()  # the job trains on its snapshot, not on the file
    assert main(["jobs", "run", *home]) == 0
    capsys.readouterr()
    with Workbench(tiny_home) as wb:
        jobs = Jobs(wb.home, wb.store)
        assert jobs.get(1)["status"] == "succeeded", jobs.log_text(1)
        row = models.get(wb.store.cursor(), "pretrain-1")
        assert row["parent"] == "base" and row["method"] == "pretrain" and row["job_id"] == 1
        stored = json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]
        assert stored["eval/perplexity"] < stored["eval/perplexity_before"]
        card = json.loads((wb.home.model_dir("pretrain-1") / "card.json").read_text())
        assert card["corpus"] == spec["corpus"] and card["metrics"]["eval/perplexity"] == stored["eval/perplexity"]
        log = jobs.log_text(1)
        assert "Schedule: " in log and "chunks held out at random" in log and "Held-out perplexity:" in log
        table = job_views.models_table(wb.models()).set_index("name")
        before, after = stored["eval/perplexity_before"], stored["eval/perplexity"]
        assert table.loc["pretrain-1", "held-out ppl"] == f"{before:.3g} → {after:.3g}"
        assert "held-out perplexity" in job_views.status_sentence(job_views.job_status(jobs, 1))
    assert main(["jobs", "show", "1", *home]) == 0
    assert f"Held-out perplexity {before:.4g} before, {after:.4g} after" in capsys.readouterr().out
    assert main(["train", "pretrain", "--corpus", str(corpus), *home]) == 1  # gone now: one sentence, no job
    assert "manual.jsonl: cannot be read (No such file or directory)." in capsys.readouterr().err
    assert sorted(path.name for path in tiny_home.jobs_dir.iterdir()) == ["1"]


def test_bad_corpora_are_one_sentence_and_make_no_job(workbench, tmp_path):
    jobs = Jobs(workbench.home, workbench.store)
    no_text = tmp_path / "notes.jsonl"
    no_text.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"body": "no text here"}\n')
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    refusals = {
        None: r"^pretrain trains on a corpus file and none was given: .*\.$",
        str(tmp_path / "missing.txt"): r"^The corpus .*missing\.txt: cannot be read \(No such file or directory\)\.$",
        str(no_text): r"^The corpus .*notes\.jsonl, line 3: has no text field \(its fields: body\)\.$",
        str(empty): r"^The corpus .*empty\.txt: the corpus holds no text\.$",
    }
    for corpus, message in refusals.items():
        with pytest.raises(DataError, match=message):
            jobs.submit(JobRequest("pretrain", corpus=corpus))
    with pytest.raises(DataError, match=r"^pretrain trains on its corpus, not on rankings: leave out the data"):
        jobs.submit(JobRequest("pretrain", corpus=str(MANUAL), selection={"annotators": ["ana"]}))
    with pytest.raises(DataError, match=r"^Only pretrain trains on a corpus; dpo trains on the rankings"):
        jobs.submit(JobRequest("dpo", corpus=str(MANUAL)))
    assert job_count(workbench) == 0 and list(workbench.home.jobs_dir.iterdir()) == []


def test_a_corpus_too_short_to_hold_a_chunk_out_is_one_sentence(tiny_model_dir, tmp_path):
    config, options = resolve("pretrain", {"max_length": 512})
    short = pd.DataFrame({"document": [0], "text": ["The zarnel valve glows amber."]})
    with pytest.raises(Exception, match=r"^The corpus makes 1 chunk of at most 512 tokens, and at least 2 are needed"):
        pretrain.train(TrainInputs(short, tiny_model_dir, tmp_path / "model", config, options))
    assert not (tmp_path / "model").exists()


@pytest.mark.timeout(120)
def test_on_the_real_model_held_out_perplexity_of_a_domain_manual_falls(real_model_dir, tmp_path):
    """SmolLM2-135M with LoRA (the default adapter) on the kiln manual, six steps of four
    32-token chunks at 1e-3 (five times the default rate, so that it shows in under a
    minute on one CPU thread): the held-out chunks, never trained on, become far likelier.
    A no-op leaves the ratio at exactly 1; measured 176 -> 52 (0.30), asked below 0.8."""
    settings = {"max_length": 32, "max_steps": 6, "learning_rate": 1e-3, "eval_fraction": 0.1, "guard_prompts": 0}
    config, options = resolve("pretrain", settings)
    inputs = TrainInputs(corpus_frame(), real_model_dir, tmp_path / "model", config, options,
                         given=frozenset(settings))
    metrics = pretrain.train(inputs)
    assert metrics["corpus/heldout_chunks"] == 8 and metrics["corpus/heldout_tokens"] > 200
    assert math.isfinite(metrics["eval/perplexity_before"]) and metrics["eval/perplexity_before"] > 1
    assert metrics["eval/perplexity_ratio"] < 0.8, metrics
