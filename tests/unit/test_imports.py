"""Rankings brought in from other tools (`rlhf rankings import --from TOOL`): each fixture in
tests/data is written from its tool's documented schema (the readers in
rlhf/collect/imports/ cite the pages). Each is imported into a tiny home and the stored
rankings checked (who, the order, ties, the texts kept as text); a broken copy of each is
refused with its place and reason, and then nothing at all is stored."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import cli
from rlhf import auth
from rlhf.collect import formats, imports
from rlhf.collect.formats import FormatError
from rlhf.collect.imports.record import ToolRanking
from rlhf.collect.workbench import Workbench
from helpers import DATA, rows

LS_RANKER = DATA / "labelstudio-ranker.json"
LS_PAIRWISE = DATA / "labelstudio-pairwise.json"
ARGILLA_DISK = DATA / "argilla-disk"
POTATO = DATA / "potato-annotated_instances.jsonl"
POTATO_DATA = DATA / "potato-data.jsonl"
POTATO_OUTPUT = DATA / "potato-output"
OASST = DATA / "oasst-trees.jsonl"
USER_1 = "argilla:5b1f6a9e-0000-4000-8000-000000000001"
USER_2 = "argilla:5b1f6a9e-0000-4000-8000-000000000002"


def stored(wb: Workbench) -> list[tuple]:
    """Each stored ranking: its prompt, the completions' texts by letter, annotator, ranking, source."""
    return rows(wb, """
        SELECT p.text, (SELECT list(m.text ORDER BY m.letter) FROM completions m WHERE m.comparison_id = c.id),
               r.annotator, r.ranking, r.source
        FROM rankings r JOIN comparisons c ON c.id = r.comparison_id JOIN prompts p ON p.id = c.prompt_id
        ORDER BY r.id""")


def ranks_agree_with_rankings(wb: Workbench) -> bool:
    """Every stored per-completion rank is the one its ranking's text gives its letter."""
    from rlhf.preference.ranking import parse_ranking

    found = rows(wb, "SELECT r.ranking, c.k, m.letter, rr.rank FROM ranking_ranks rr JOIN rankings r ON r.id ="
                     " rr.ranking_id JOIN completions m ON m.id = rr.completion_id JOIN comparisons c ON"
                     " c.id = r.comparison_id")
    return bool(found) and all(parse_ranking(text, k).ranks()[letter] == rank for text, k, letter, rank in found)


def counts(wb: Workbench) -> tuple[int, ...]:
    return tuple(rows(wb, f"SELECT count(*) FROM {table}")[0][0]
                 for table in ("prompts", "comparisons", "completions", "rankings", "ranking_ranks", "users"))


def refused(wb: Workbench, tool: str, path: Path, data: Path | None = None) -> FormatError:
    """Import `path`, expect a refusal, and check that nothing was stored."""
    before = counts(wb)
    with pytest.raises(FormatError) as caught:
        wb.import_from(tool, path, data=data)
    assert counts(wb) == before
    return caught.value


def broken_copy(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / source.name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


# -- Label Studio ---------------------------------------------------------------------------


def test_label_studio_ranker_with_buckets(workbench):
    done = workbench.import_from("labelstudio", LS_RANKER)
    assert (done.rankings, done.comparisons, done.prompt_set) == (3, 2, "labelstudio-ranker")
    fruit = ["A banana.", "<script>alert('lemon')</script> A lemon.", "A cucumber."]
    assert stored(workbench) == [
        # one bucket is one tie group, the buckets best first; the cancelled annotation is skipped
        ("Name a fruit that is <b>yellow</b>.", fruit, "labelstudio:7", "A = B > C", "human"),
        ("Name a fruit that is <b>yellow</b>.", fruit, "labelstudio:bo@example.org", "A > B > C", "human"),
        # without buckets, the one list is a strict order
        ("Say hello.", ["Hello!", "Go away."], "labelstudio:7", "A > B", "human"),
    ]
    assert ranks_agree_with_rankings(workbench)
    assert rows(workbench, "SELECT DISTINCT source FROM comparisons") == [("import",)]
    assert sorted(done.users_created) == ["labelstudio:7", "labelstudio:bo@example.org"]
    assert rows(workbench, "SELECT role FROM users WHERE name LIKE 'labelstudio:%'") == [("annotator",)] * 2
    # the accounts name people; no password signs in to them
    assert auth.authenticate(workbench.store, "labelstudio:7", auth.NO_PASSWORD) is None


def test_label_studio_pairwise(workbench):
    workbench.import_from("labelstudio", LS_PAIRWISE)
    texts = ["A cat sat.", "A dog ran."]
    assert stored(workbench) == [
        ("Summarise: the cat sat on the mat.", texts, "labelstudio:7", "A > B", "human"),
        ("Summarise: the cat sat on the mat.", texts, "labelstudio:8", "B > A", "human"),
    ]


def test_a_second_import_reuses_existing_users(workbench):
    workbench.import_from("labelstudio", LS_RANKER)
    assert workbench.import_from("labelstudio", LS_PAIRWISE).users_created == ["labelstudio:8"]


def test_label_studio_broken_copies_are_refused_whole(workbench, tmp_path):
    unknown_item = broken_copy(tmp_path, LS_RANKER, '"rank": ["x", "y"]', '"rank": ["x", "z"]')
    error = refused(workbench, "labelstudio", unknown_item)
    assert str(error) == f"{unknown_item}, task 2: annotation 1 ranks item 'z', which the task's list does not hold."
    assert (error.line, error.unit) == (2, "task")

    unplaced = broken_copy(tmp_path, LS_RANKER, '{"good": ["r1"], "ok": ["r2"], "bad": ["r3"]}',
                           '{"good": ["r1"], "_": ["r2"], "bad": ["r3"]}')
    assert refused(workbench, "labelstudio", unplaced).reason == \
        "annotation 2 left r2 in no bucket: every item needs a rank"

    twice = broken_copy(tmp_path, LS_PAIRWISE, '"completed_by": 8', '"completed_by": 7')
    assert refused(workbench, "labelstudio", twice).reason == \
        "labelstudio:7 ranks the same prompt and completions a second time (first at task 1)"


def test_an_oversized_text_is_refused_by_the_limits(workbench, tmp_path):
    huge = broken_copy(tmp_path, LS_PAIRWISE, '"A dog ran."', json.dumps("x" * 20_001))
    assert refused(workbench, "labelstudio", huge).reason == \
        "completion B is 20,001 characters long; at most 20,000 are taken"


def test_an_oversized_file_is_refused_before_it_is_parsed(workbench, monkeypatch):
    monkeypatch.setattr(formats, "READ_LIMITS", formats.ReadLimits(max_decompressed_bytes=100))
    error = refused(workbench, "labelstudio", LS_PAIRWISE)
    assert error.line is None and "more than the 100 bytes one import may hold" in error.reason


# -- Argilla ----------------------------------------------------------------------------------

HAIKU = ("Write a haiku about rain.",
         ["Rain taps the window.", "<img src=x onerror=alert(1)>", "Clouds weep; the street shines."])
SUM = ("What is 2+2?", ["4", "22", "Four."])
ARGILLA_RANKINGS = [
    # rank values kept: two options at rank 1 are a tie (the SDK's own Response drops it)
    (*HAIKU, USER_1, "A = C > B", "human"),
    # the SDK's form, a bare list best first
    (*HAIKU, USER_2, "A > C > B", "human"),
    (*SUM, USER_2, "A = C > B", "human"),
    # USER_1's draft of record 2 is no ranking
]


def test_argilla_to_disk_folder(workbench):
    done = workbench.import_from("argilla", ARGILLA_DISK)
    assert (done.rankings, done.comparisons, done.prompt_set) == (3, 2, "argilla-disk")
    assert stored(workbench) == ARGILLA_RANKINGS
    assert ranks_agree_with_rankings(workbench)


def _flattened(record: dict) -> dict:
    """One record as `records.to_datasets()` flattens it (argilla/records/_io/_generic.py).
    Arrow holds one type per column, so the SDK's bare options become {value, rank: null}."""
    row = {"id": record["id"], "_server_id": record["_server_id"], **record["fields"]}
    for question, answers in record["responses"].items():
        values = [a["value"] for a in answers]
        if question == "preference":
            values = [[item if isinstance(item, dict) else {"value": item, "rank": None} for item in value]
                      for value in values]
        row[f"{question}.responses"] = values
        row[f"{question}.responses.users"] = [a["user_id"] for a in answers]
        row[f"{question}.responses.status"] = [a.get("status", "submitted") for a in answers]
    return row


def test_argilla_parquet(workbench, tmp_path):
    records = json.loads((ARGILLA_DISK / "records.json").read_text())
    path = tmp_path / "argilla.parquet"
    pq.write_table(pa.Table.from_pylist([_flattened(record) for record in records]), path)
    workbench.import_from("argilla", path)
    assert stored(workbench) == ARGILLA_RANKINGS


def test_argilla_broken_copy_is_refused_whole(workbench, tmp_path):
    folder = tmp_path / "argilla-disk"
    folder.mkdir()
    broken_copy(folder, ARGILLA_DISK / "records.json", '{"value": "response2", "rank": 3}',
                '{"value": "response2", "rank": 0}')
    error = refused(workbench, "argilla", folder)
    assert str(error) == (f"{folder / 'records.json'}, record 2: the option 'response2' has rank 0; ranks are"
                          " whole numbers from 1.")

    broken_copy(folder, ARGILLA_DISK / "records.json", '["response1", "response3", "response2"]',
                '["response1", "response3", "response9"]')
    assert refused(workbench, "argilla", folder).reason == \
        "the preference ranking names 'response9', which is not a field of the record"


# -- Potato -----------------------------------------------------------------------------------


def test_potato_rank_order_with_ties(workbench):
    done = workbench.import_from("potato", POTATO, data=POTATO_DATA)
    cat = ["Le chat était assis sur le tapis.", "Le chat s'est assis sur le tapis.", "Chat sur tapis.",
           "<i>Le chien</i>"]
    prompt = "Translate to French: The cat sat on the mat."
    assert stored(workbench) == [
        # "B,D=A,C": B first, D and A tied, then C
        (prompt, cat, "potato:ana", "B > A = D > C", "human"),
        (prompt, cat, "potato:bo", "A > B > C > D", "human"),
        ("Translate to French: Good morning.", ["Bonjour.", "Bonsoir."], "potato:ana", "A > B", "human"),
    ]
    assert done.comparisons == 2 and ranks_agree_with_rankings(workbench)


def test_potato_output_folder_names_each_annotator(workbench):
    workbench.import_from("potato", POTATO_OUTPUT, data=POTATO_DATA)
    assert [(who, ranking) for _, _, who, ranking, _ in stored(workbench)] == [
        ("potato:ana", "B > A = D > C"), ("potato:ana", "A > B"), ("potato:bo", "A > B > C > D")]
    assert rows(workbench, "SELECT count(*) FROM comparisons")[0][0] == 2


def test_potato_broken_copies_are_refused_whole(workbench, tmp_path):
    lone = POTATO_OUTPUT / "ana" / "annotated_instances.jsonl"
    assert refused(workbench, "potato", lone, data=POTATO_DATA).reason == \
        "the line names no user_id; import Potato's output folder, whose <user> folders name them"

    incomplete = broken_copy(tmp_path, POTATO, '"A,B,C,D"', '"A,B,C"')
    error = refused(workbench, "potato", incomplete, data=POTATO_DATA)
    assert str(error) == f"{incomplete}, line 2: rank_order 'A,B,C' does not rank D: every item needs a rank."
    assert refused(workbench, "potato", POTATO).reason.startswith("Potato's output names items, not their texts")


# -- OpenAssistant ----------------------------------------------------------------------------


def test_oasst_ranking_events_and_merged_ranks(workbench):
    workbench.import_from("oasst", OASST)
    egg = ["Put it in boiling water for 8 minutes.", "Boil water, add the egg, wait 9 minutes, cool it.",
           "Eggs cannot be boiled."]
    assert stored(workbench) == [
        # each ranking event is one person's; the replies keep the tree's order
        ("How do I boil an egg?", egg, "oasst:u-1", "B > A > C", "human"),
        ("How do I boil an egg?", egg, "oasst:u-2", "A > B > C", "human"),
        # a message without events: its replies' merged rank, which no one person gave
        ("And for a soft yolk?", ["About 6 minutes.", "<a href='x'>Click here</a>"], "oasst:consensus", "A > B",
         "human"),
    ]
    # the deeper prompt keeps the whole conversation down to it
    assert [json.loads(m) for (m,) in rows(workbench, "SELECT messages FROM prompts WHERE text = 'And for a soft yolk?'")] == [[
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Put it in boiling water for 8 minutes."},
        {"role": "user", "content": "And for a soft yolk?"},
    ]]


def test_oasst_broken_copy_is_refused_whole(workbench, tmp_path):
    path = tmp_path / "trees.jsonl"
    bad_tree = {"message_tree_id": "t2", "prompt": {"message_id": "z1", "text": "Hi", "role": "moderator"}}
    path.write_text(OASST.read_text() + json.dumps(bad_tree) + "\n")
    error = refused(workbench, "oasst", path)
    assert str(error) == f"{path}, line 2: message 'z1' has role 'moderator'; expected prompter or assistant."


# -- the command line ---------------------------------------------------------------------------


def test_cli_imports_from_a_tool_or_says_why_not(tiny_home, capsys):
    home = ["--home", str(tiny_home.root)]
    assert cli.main(["rankings", "import", *home, "--from", "potato", str(POTATO), "--data", str(POTATO_DATA)]) == 0
    assert capsys.readouterr().out == (
        f"Imported 3 rankings of 2 comparisons from {POTATO} (potato), prompts in set 'potato-annotated_instances';"
        " new annotators (no password yet): potato:ana, potato:bo.\n")
    assert cli.main(["rankings", "import", *home, "--from", "labelstudio", str(LS_PAIRWISE), "--pairs"]) == 1
    assert "goes without --pairs" in capsys.readouterr().err
    assert cli.main(["rankings", "import", *home, str(POTATO), "--data", str(POTATO_DATA)]) == 1
    assert capsys.readouterr().err == "rlhf: --data goes with --from potato.\n"


# -- the checks every tool's rankings go through ------------------------------------------------


def _found(completions: int, ranks: tuple[int, ...], where: int = 1) -> ToolRanking:
    return ToolRanking("f.json", where, "record", ({"role": "user", "content": "q"},),
                       tuple(f"answer {i}" for i in range(completions)), "ana", ranks)


@pytest.mark.parametrize("found, reason", [
    ([_found(9, tuple(range(1, 10)))], "9 completions to rank; a comparison holds 2 to 8"),
    ([_found(1, (1,))], "1 completion to rank; a comparison holds 2 to 8"),
    ([_found(2, (1, 0))], "'B' has rank 0, but ranks are whole numbers from 1 up"),
])
def test_plan_refuses_what_no_comparison_can_hold(found, reason):
    with pytest.raises(FormatError) as caught:
        imports.plan("argilla", "f.json", found)
    assert (caught.value.line, caught.value.unit, caught.value.reason) == (1, "record", reason)


def test_plan_refuses_a_file_without_rankings():
    with pytest.raises(FormatError) as caught:
        imports.plan("labelstudio", "f.json", [])
    assert str(caught.value) == "f.json: holds no rankings a labelstudio import can use."


def test_plan_groups_rankings_of_one_prompt_and_completions():
    planned = imports.plan("argilla", "f.json", [_found(3, (1, 1, 2)), dataclasses.replace(_found(3, (3, 2, 1), where=2), annotator="bo")])
    assert len(planned.items) == 1
    assert [(item, who, ranking.canonical) for item, who, ranking in planned.rankings] == [
        (0, "argilla:ana", "A = B > C"), (0, "argilla:bo", "C > B > A")]
