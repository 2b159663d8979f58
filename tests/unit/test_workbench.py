"""The workbench's operations on a home with the tiny random Llama as its base model:
init, generation, ranking, imports and exports, checked against the stored rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from rlhf.collect.formats import FormatError, read_table
from rlhf.modeling import precision
from rlhf.modeling.generate import SamplingParams
from rlhf.home import BASE_VERSION, Home, HomeError
from rlhf.preference.ranking import RankingError
from rlhf.collect.workbench import DEFAULT_PROMPT_SET, Workbench, WorkbenchError
from rlhf.home import default_prompts
from rlhf.versions import VersionError
from storage import comparisons
from storage.comparisons import NewCompletion
from helpers import rows

FAST = SamplingParams(max_new_tokens=4, seed=1)


def count(wb: Workbench, table: str) -> int:
    return wb.store.cursor().execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def add_comparison(wb: Workbench, k: int, prompt_index: int = 0) -> int:
    """A comparison of K completions 'answer A', 'answer B', ... from the base version for
    one of the default prompts, stored directly: ranking, importing and exporting need
    no sampling (generation itself is tested on its own below)."""
    cur = wb.store.cursor()
    prompt_id = cur.execute("SELECT id FROM prompts ORDER BY id LIMIT 1 OFFSET ?", [prompt_index]).fetchall()[0][0]
    with wb.store.transaction() as tx:
        return comparisons.add(tx, prompt_id, [
            NewCompletion(f"answer {chr(ord('A') + i)}", "base", FAST.as_dict(), 4, "length") for i in range(k)])


@pytest.fixture
def ranked(workbench):
    """One comparison of four completions ranked 'C > B = D > A' by ana."""
    comparison_id = add_comparison(workbench, 4)
    workbench.rank(comparison_id, "c>b=d>a", "ana")
    return comparison_id


# -- init -------------------------------------------------------------------------------


def test_init_is_idempotent(workbench):
    shipped = default_prompts()
    assert len(shipped) >= 150
    report = workbench.init()  # the fixture already ran it once
    assert report.prompts_added == 0
    assert report.prompt_set == DEFAULT_PROMPT_SET == "default"
    assert report.schema_version >= 1
    assert report.base_model == workbench.home.model_dir(BASE_VERSION)
    assert rows(workbench, "SELECT name, kind, status, method, path FROM model_versions") == [
        ("base", "policy", "active", "import", "models/base")]
    assert rows(workbench, "SELECT prompt_set, count(*) FROM prompts GROUP BY ALL") == [("default", len(shipped))]
    assert rows(workbench, "SELECT count(*) FROM prompts WHERE category IS NULL") == [(0,)]
    assert workbench.prompt_sets().to_dict("records") == [{"prompt_set": "default", "prompts": len(shipped)}]


def test_reopened_home_keeps_its_state(tiny_home):
    with Workbench(tiny_home) as wb:
        assert wb.init().prompts_added == 0
        assert count(wb, "model_versions") == 1
        assert wb.model_version(None).name == "base"


# -- generate ---------------------------------------------------------------------------


def test_generate_stores_comparisons_with_provenance(workbench):
    created = workbench.generate(n=2, k=3, params=FAST)
    assert len(created) == 2
    assert rows(workbench, "SELECT id, k, source, round FROM comparisons ORDER BY id") == [
        (created[0], 3, "generated", 1), (created[1], 3, "generated", 1)]
    completions = workbench.store.cursor().execute(
        "SELECT comparison_id, letter, text, model_version, sampling, num_tokens, finish_reason"
        " FROM completions ORDER BY comparison_id, letter").df()
    assert len(completions) == 6
    assert list(completions["letter"]) == ["A", "B", "C"] * 2
    assert set(completions["model_version"]) == {"base"}
    for sampling in completions["sampling"]:
        # the dtype the weights ran in is part of a completion's provenance (bf16 where the CPU has it)
        assert json.loads(sampling) == {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 4, "seed": 1,
                                        "dtype": precision.current().dtype}
    assert set(completions["finish_reason"]) <= {"eos", "length"}
    assert (completions["num_tokens"] >= 1).all() and (completions["num_tokens"] <= 4).all()
    length = completions[completions["finish_reason"] == "length"]
    assert (length["num_tokens"] == 4).all()

    # the first prompts of the default set, in order
    first_two = rows(workbench, "SELECT id FROM prompts WHERE prompt_set = 'default' ORDER BY id LIMIT 2")
    assert rows(workbench, "SELECT prompt_id FROM comparisons ORDER BY id") == first_two

    listed = workbench.comparisons()
    assert list(listed["id"]) == created
    assert [len(c) for c in listed["completions"]] == [3, 3]
    assert list(listed["rankings"]) == [0, 0]
    comparison = workbench.comparison(created[0])
    assert comparison.k == 3 and [c["letter"] for c in comparison.completions] == ["A", "B", "C"]


def test_seeded_generation_is_reproducible(workbench, tmp_path):
    # the same prompt in two sets: the version has compared neither copy yet
    for name in ("twin_a", "twin_b", "twin_c"):
        workbench.import_prompts(write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": "Name three rivers."}]))
    [a] = workbench.generate("twin_a", n=1, k=3, params=SamplingParams(max_new_tokens=5, seed=123))
    [b] = workbench.generate("twin_b", n=1, k=3, params=SamplingParams(max_new_tokens=5, seed=123))
    [c] = workbench.generate("twin_c", n=1, k=3, params=SamplingParams(max_new_tokens=5, seed=124))
    texts = {cid: [m["text"] for m in workbench.comparison(cid).completions] for cid in (a, b, c)}
    assert texts[a] == texts[b]
    assert texts[a] != texts[c]
    assert len(set(texts[a])) > 1  # the K samples of one prompt are not copies of each other


@pytest.mark.parametrize("k", [1, 9])
def test_generate_refuses_k_out_of_range(workbench, k):
    with pytest.raises(WorkbenchError) as caught:
        workbench.generate(n=1, k=k, params=FAST)
    assert str(caught.value) == f"K must be between 2 and 8, not {k}."
    assert count(workbench, "comparisons") == 0


def test_generate_refuses_unknown_model_version(workbench):
    with pytest.raises(VersionError) as caught:
        workbench.generate(n=1, k=2, model_version="v9", params=FAST)
    assert str(caught.value) == "There is no model version 'v9' (known versions: base)."
    assert count(workbench, "comparisons") == 0 and count(workbench, "completions") == 0


def test_generate_refuses_unknown_prompt_set(workbench):
    with pytest.raises(WorkbenchError) as caught:
        workbench.generate("nope", n=1, k=2, params=FAST)
    assert str(caught.value) == "There is no prompt set 'nope' (known sets: default)."
    assert count(workbench, "comparisons") == 0 and count(workbench, "completions") == 0


def test_repeated_generate_walks_through_the_set(workbench, tmp_path):
    workbench.import_prompts(write_jsonl(tmp_path / "small.jsonl", [{"prompt": p} for p in ("one", "two", "three")]))
    first = workbench.generate("small", n=2, k=2, params=FAST)
    second = workbench.generate("small", n=2, k=2, params=FAST)
    assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
    assert rows(workbench, "SELECT p.text FROM comparisons c JOIN prompts p ON p.id = c.prompt_id ORDER BY c.id") == [
        ("one",), ("two",), ("three",)]
    assert workbench.generate("small", n=2, k=2, params=FAST) == []  # every prompt done
    assert count(workbench, "comparisons") == 3


# -- rank -------------------------------------------------------------------------------


def test_rank_stores_canonical_form_and_ranks(workbench, ranked):
    assert rows(workbench, "SELECT comparison_id, annotator, source, ranking FROM rankings") == [
        (ranked, "ana", "human", "C > B = D > A")]
    assert rows(workbench,
                "SELECT m.letter, r.rank FROM ranking_ranks r JOIN completions m ON m.id = r.completion_id"
                " ORDER BY m.letter") == [("A", 3), ("B", 2), ("C", 1), ("D", 2)]
    assert list(workbench.comparisons(pending=True)["id"]) == []
    assert list(workbench.comparisons()["rankings"]) == [1]


def test_rank_returns_the_canonical_ranking(workbench):
    comparison_id = add_comparison(workbench, 3)
    ranking = workbench.rank(comparison_id, "  b =a>  c ", " bob ", seconds_spent=4.0)
    assert ranking.canonical == "A = B > C"
    assert rows(workbench, "SELECT annotator, ranking, seconds_spent FROM rankings") == [("bob", "A = B > C", 4.0)]


@pytest.mark.parametrize("text, message", [
    ("C > B > A > E", "'E' is not one of the shown completions A–D."),
    ("C > B = B > A", "'B' appears more than once."),
    ("C > B = D", "'A' is missing: rank every shown completion."),
    ("C > B = D > A >", "The ranking ends with '>': put a completion after it."),
])
def test_invalid_ranking_stores_nothing(workbench, text, message):
    comparison_id = add_comparison(workbench, 4)
    with pytest.raises(RankingError) as caught:
        workbench.rank(comparison_id, text, "ana")
    assert str(caught.value) == message
    assert count(workbench, "rankings") == 0 and count(workbench, "ranking_ranks") == 0


def test_duplicate_ranking_is_refused(workbench, ranked):
    with pytest.raises(WorkbenchError) as caught:
        workbench.rank(ranked, "A > B > C > D", "ana")
    assert str(caught.value) == (
        f"ana already ranked comparison {ranked} as 'C > B = D > A'; rankings are never overwritten.")
    assert rows(workbench, "SELECT ranking FROM rankings") == [("C > B = D > A",)]
    assert count(workbench, "ranking_ranks") == 4


def test_rank_refuses_unknown_comparison_and_missing_user(workbench, ranked):
    with pytest.raises(WorkbenchError, match=r"^There is no comparison 999999\.$"):
        workbench.rank(999999, "A > B", "ana")
    with pytest.raises(WorkbenchError, match="needs the name of the person"):
        workbench.rank(ranked, "A > B > C > D", "  ")
    assert count(workbench, "rankings") == 1


# -- import rankings --------------------------------------------------------------------


@pytest.fixture
def three(workbench) -> list[int]:
    return [add_comparison(workbench, 3, prompt_index=i) for i in range(3)]


def test_import_rankings_stores_every_line(workbench, three, tmp_path):
    path = write_jsonl(tmp_path / "ranks.jsonl", [
        {"comparison_id": three[0], "ranking": "a>b>c", "user": "ana"},
        {"comparison_id": three[1], "ranking": "B = C > A", "user": "ana"},
        {"comparison_id": three[0], "ranking": "C > A = B", "user": "bob"},
    ])
    assert workbench.import_rankings(path) == 3
    assert rows(workbench, "SELECT comparison_id, annotator, source, ranking FROM rankings ORDER BY id") == [
        (three[0], "ana", "human", "A > B > C"), (three[1], "ana", "human", "B = C > A"),
        (three[0], "bob", "human", "C > A = B")]
    assert count(workbench, "ranking_ranks") == 9
    assert list(workbench.comparisons(pending=True)["id"]) == [three[2]]


@pytest.mark.parametrize("third, reason", [
    ("invalid", "'D' is not one of the shown completions A–C"),
    ("unknown", "there is no comparison 987654"),
    ("ranked_before", "carol has already ranked comparison"),
    ("twice_in_file", "ana has already ranked comparison"),
])
def test_import_rankings_with_a_bad_line_stores_nothing(workbench, three, tmp_path, third, reason):
    workbench.rank(three[2], "A > B > C", "carol")
    before = count(workbench, "rankings"), count(workbench, "ranking_ranks")
    bad = {
        "invalid": {"comparison_id": three[1], "ranking": "A > B > D", "user": "bob"},
        "unknown": {"comparison_id": 987654, "ranking": "A > B > C", "user": "bob"},
        "ranked_before": {"comparison_id": three[2], "ranking": "C > B > A", "user": "carol"},
        "twice_in_file": {"comparison_id": three[0], "ranking": "C > B > A", "user": "ana"},
    }[third]
    path = write_jsonl(tmp_path / "ranks.jsonl", [
        {"comparison_id": three[0], "ranking": "A > B > C", "user": "ana"},
        {"comparison_id": three[1], "ranking": "A = B = C", "user": "ana"},
        bad,
        {"comparison_id": three[1], "ranking": "C > B > A", "user": "dan"},
    ])
    with pytest.raises(FormatError) as caught:
        workbench.import_rankings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 3: ")
    assert reason in message
    assert caught.value.line == 3
    assert (count(workbench, "rankings"), count(workbench, "ranking_ranks")) == before


def test_import_rankings_with_a_malformed_line_stores_nothing(workbench, three, tmp_path):
    path = tmp_path / "ranks.jsonl"
    path.write_text(json.dumps({"comparison_id": three[0], "ranking": "A > B > C", "user": "ana"}) + "\n"
                    + json.dumps({"comparison_id": "two", "ranking": "A > B > C", "user": "ana"}) + "\n")
    with pytest.raises(FormatError, match=r"ranks\.jsonl, line 2: comparison_id must be a whole number"):
        workbench.import_rankings(path)
    assert count(workbench, "rankings") == 0


# -- import pairs -----------------------------------------------------------------------


def _pairs_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "standard": write_jsonl(tmp_path / "standard.jsonl", [
            {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "What is 2+2?", "chosen": "Four.", "rejected": "Fish."},
            {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"},
        ]),
        "conversational": write_jsonl(tmp_path / "conversational.jsonl", [
            {"prompt": user("What is 2+2?"), "chosen": assistant("4"), "rejected": assistant("5")},
            {"prompt": user("What is 2+2?"), "chosen": assistant("Four."), "rejected": assistant("Fish.")},
            {"prompt": user("Capital of France?"), "chosen": assistant("Paris"), "rejected": assistant("Rome")},
        ]),
        "hh": write_jsonl(tmp_path / "hh.jsonl", [
            {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5"},
            {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: Four.",
             "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: Fish."},
            {"chosen": "\n\nHuman: Capital of France?\n\nAssistant: Paris",
             "rejected": "\n\nHuman: Capital of France?\n\nAssistant: Rome"},
        ]),
    }


@pytest.mark.parametrize("layout", ["standard", "conversational", "hh"])
def test_import_pairs(workbench, tmp_path, layout):
    path = _pairs_files(tmp_path)[layout]
    assert workbench.import_pairs(path) == 3
    assert rows(workbench, "SELECT text, source FROM prompts WHERE prompt_set = ? ORDER BY id", [layout]) == [
        ("What is 2+2?", str(path)), ("Capital of France?", str(path))]
    assert rows(workbench,
                "SELECT p.text, c.k, c.source FROM comparisons c JOIN prompts p ON p.id = c.prompt_id ORDER BY c.id") == [
        ("What is 2+2?", 2, "import"), ("What is 2+2?", 2, "import"), ("Capital of France?", 2, "import")]
    # each pair's two texts, the chosen one at a random letter, and ranked first by the import
    assert rows(workbench, "SELECT list(text ORDER BY text), list(DISTINCT letter ORDER BY letter),"
                           " any_value(model_version) FROM completions GROUP BY comparison_id ORDER BY comparison_id") == [
        (["4", "5"], ["A", "B"], None), (["Fish.", "Four."], ["A", "B"], None), (["Paris", "Rome"], ["A", "B"], None)]
    assert rows(workbench, "SELECT r.annotator, r.source, m.text FROM rankings r JOIN ranking_ranks rr"
                           " ON rr.ranking_id = r.id JOIN completions m ON m.id = rr.completion_id"
                           " WHERE rr.rank = 1 ORDER BY r.comparison_id") == [
        (f"import:{path.name}", "import", text) for text in ("4", "Four.", "Paris")]
    assert all(ranking in ("A > B", "B > A") for (ranking,) in rows(workbench, "SELECT ranking FROM rankings"))

    out, n = workbench.export("preference", tmp_path / "pairs.jsonl")
    assert n == 3
    exported = read_table(out)
    assert exported.to_dict("records") == [
        {"prompt": user("What is 2+2?"), "chosen": assistant("4"), "rejected": assistant("5"), "margin": 1.0},
        {"prompt": user("What is 2+2?"), "chosen": assistant("Four."), "rejected": assistant("Fish."), "margin": 1.0},
        {"prompt": user("Capital of France?"), "chosen": assistant("Paris"), "rejected": assistant("Rome"),
         "margin": 1.0},
    ]


def test_import_pairs_into_a_named_set_with_history(workbench, tmp_path):
    history = [*user("Hi"), *assistant("Hello! How can I help?"), *user("Tell me a joke.")]
    path = write_jsonl(tmp_path / "multi.jsonl", [
        {"prompt": history, "chosen": assistant("Why did the chicken..."), "rejected": assistant("No.")}])
    assert workbench.import_pairs(path, prompt_set="jokes") == 1
    stored = rows(workbench, "SELECT prompt_set, text, messages FROM prompts WHERE prompt_set = 'jokes'")
    assert [(s, t, json.loads(m)) for s, t, m in stored] == [("jokes", "Tell me a joke.", history)]
    exported = read_table(workbench.export("preference", tmp_path / "out.parquet")[0])
    assert exported["prompt"].tolist() == [history]


def test_import_pairs_with_a_bad_line_stores_nothing(workbench, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "a", "chosen": "x", "rejected": "y"},
        {"prompt": "b", "chosen": "same", "rejected": "same"},
    ])
    with pytest.raises(FormatError) as caught:
        workbench.import_pairs(path)
    assert str(caught.value) == f"{path}, line 2: chosen and rejected are identical."
    assert count(workbench, "comparisons") == 0 and "pairs" not in workbench.prompt_sets()["prompt_set"].tolist()


# -- import prompts ---------------------------------------------------------------------


def test_import_prompts(workbench, tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"prompt": "Write a haiku about rain."},
        {"messages": [*user("Hi"), *assistant("Hello"), *user("Summarise our chat.")]},
        {"prompt": "Write a haiku about rain."},
    ])
    assert workbench.import_prompts(path) == 2
    assert workbench.import_prompts(path) == 0
    assert workbench.import_prompts(path, prompt_set="copy") == 2
    assert rows(workbench, "SELECT prompt_set, text, source FROM prompts WHERE prompt_set <> 'default' ORDER BY id") == [
        ("mine", "Write a haiku about rain.", str(path)), ("mine", "Summarise our chat.", str(path)),
        ("copy", "Write a haiku about rain.", str(path)), ("copy", "Summarise our chat.", str(path))]


def test_import_prompts_with_a_bad_line_stores_nothing(workbench, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": 42}\n', encoding="utf-8")
    before = count(workbench, "prompts")
    with pytest.raises(FormatError) as caught:
        workbench.import_prompts(path)
    assert str(caught.value) == f"{path}, line 3: prompt must be text, got 42."
    assert count(workbench, "prompts") == before
    assert workbench.prompt_sets()["prompt_set"].tolist() == ["default"]


# -- export -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_export_preference_pairs(workbench, ranked, tmp_path, suffix):
    comparison = workbench.comparison(ranked)
    text = {c["letter"]: c["text"] for c in comparison.completions}
    path, n = workbench.export("preference", tmp_path / f"prefs{suffix}")
    assert path == tmp_path / f"prefs{suffix}" and path.is_file()
    table = read_table(path)
    assert list(table.columns) == ["prompt", "chosen", "rejected", "margin"]
    assert n == len(table) == 5
    assert all(p == [{"role": "user", "content": comparison.prompt}] for p in table["prompt"])
    got = {(c[0]["content"], r[0]["content"], m) for c, r, m in zip(table["chosen"], table["rejected"], table["margin"])}
    expected = {(text["C"], text["B"], 1.0), (text["C"], text["D"], 1.0), (text["C"], text["A"], 2.0),
                (text["B"], text["A"], 1.0), (text["D"], text["A"], 1.0)}
    assert got == expected
    assert all(c[0]["role"] == "assistant" and r[0]["role"] == "assistant"
               for c, r in zip(table["chosen"], table["rejected"]))


def test_export_best_vs_worst(workbench, ranked, tmp_path):
    text = {c["letter"]: c["text"] for c in workbench.comparison(ranked).completions}
    path, n = workbench.export("preference", tmp_path / "bvw.parquet", selection="best_vs_worst")
    table = read_table(path)
    assert n == 1
    assert table.to_dict("records") == [{
        "prompt": [{"role": "user", "content": workbench.comparison(ranked).prompt}],
        "chosen": assistant(text["C"]), "rejected": assistant(text["A"]), "margin": 2.0}]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_export_unpaired(workbench, ranked, tmp_path, suffix):
    text = {c["letter"]: c["text"] for c in workbench.comparison(ranked).completions}
    path, n = workbench.export("unpaired", tmp_path / f"kto{suffix}")
    table = read_table(path)
    assert list(table.columns) == ["prompt", "completion", "label"]
    assert n == 2
    assert sorted((c[0]["content"], bool(label)) for c, label in zip(table["completion"], table["label"])) == sorted(
        [(text["C"], True), (text["A"], False)])


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_export_rankings(workbench, ranked, tmp_path, suffix):
    workbench.rank(ranked, "A > B = C = D", "bob")
    path, n = workbench.export("rankings", tmp_path / f"raw{suffix}")
    table = read_table(path)
    assert n == len(table) == 2
    assert {"ranking_id", "comparison_id", "prompt", "messages", "completions", "ranking", "ranks", "user"} <= set(table.columns)
    assert table[["comparison_id", "ranking", "user"]].values.tolist() == [
        [ranked, "C > B = D > A", "ana"], [ranked, "A > B = C = D", "bob"]]
    assert [list(r) for r in table["ranks"]] == [[3, 2, 1, 2], [1, 2, 2, 2]]
    assert [len(c) for c in table["completions"]] == [4, 4]


def test_export_with_no_rankings_writes_an_empty_table(workbench, tmp_path):
    path, n = workbench.export("preference", tmp_path / "empty.parquet")
    assert n == 0 and path.is_file()
    assert len(pd.read_parquet(path)) == 0


def test_export_refuses_unknown_format_and_file_type(workbench, ranked, tmp_path):
    with pytest.raises(WorkbenchError) as caught:
        workbench.export("csv", tmp_path / "x.parquet")
    assert str(caught.value) == "Unknown export format 'csv': choose preference, unpaired, rankings."
    with pytest.raises(FormatError, match="unsupported file type"):
        workbench.export("preference", tmp_path / "x.csv")
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "x.csv").exists()


# -- the home ---------------------------------------------------------------------------


def test_home_that_is_not_writable_is_refused(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as a user (root) for whom permissions do not apply")
        with pytest.raises(HomeError) as caught:
            Workbench(Home(parent / "home"))
        message = str(caught.value)
        assert message == f"Cannot create the workbench home {parent / 'home'}: permission denied."
        assert "\n" not in message and "Errno" not in message
    finally:
        parent.chmod(0o700)


def test_home_that_is_a_file_is_refused(tmp_path):
    plain = tmp_path / "file"
    plain.write_text("not a directory")
    with pytest.raises(HomeError) as caught:
        Workbench(Home(plain))
    assert str(caught.value) == f"Cannot create the workbench home {plain}: file exists."
    with pytest.raises(HomeError) as caught:
        Workbench(Home(plain / "home"))
    assert str(caught.value) == f"Cannot create the workbench home {plain / 'home'}: not a directory."


# -- refusals ----------------------------------------------------------------------------


def test_generate_without_an_active_policy_says_so(workbench):
    workbench.store.cursor().execute("UPDATE model_versions SET status = 'archived'")
    with pytest.raises(WorkbenchError) as caught:
        workbench.generate(n=1, k=2, params=FAST)
    message = str(caught.value)
    assert "'None'" not in message
    assert "active" in message and "base" in message
    assert count(workbench, "comparisons") == 0


@pytest.mark.parametrize("n", [0, -1])
def test_generate_refuses_n_below_one(workbench, n):
    with pytest.raises(WorkbenchError):
        workbench.generate(n=n, k=2, params=FAST)
    assert count(workbench, "comparisons") == 0
