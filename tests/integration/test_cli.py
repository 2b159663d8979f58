"""The `rlhf` command line, run in-process through `app.cli.main` on a tiny-model home,
plus the installed console script against a home this test process holds open."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.db import migrations

from app.cli import main
from rlhf.collect.formats import read_table
from rlhf.collect.workbench import Workbench
from rlhf.home import default_prompts
from rlhf.modeling import precision
from storage import comparisons
from storage.comparisons import NewCompletion
from helpers import add_comparisons
from helpers import DATA

RLHF = Path(sys.executable).parent / "rlhf"


@pytest.fixture
def cli(tiny_home, capsys):
    """cli("rank", "1", "A > B", "--user", "ana") -> (exit code, stdout, stderr), with --home."""
    def run(*argv: str, home: bool = True) -> tuple[int, str, str]:
        args = list(argv) + (["--home", str(tiny_home.root)] if home else [])
        code = main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def stored(home, sql: str, params=None) -> list[tuple]:
    with Workbench(home) as wb:
        return wb.store.cursor().execute(sql, params or []).fetchall()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def assert_one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1
    assert out == ""
    assert err.startswith("rlhf: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.removeprefix("rlhf: ").strip()


def short_answers(home) -> None:
    """The queue's token budget cut to 8, so that `init`'s first comparison costs little."""
    from rlhf.collect.annotation import Annotation
    from rlhf.auth import User

    with Workbench(home) as wb:
        Annotation(wb).set_config(User("admin", "admin"), max_new_tokens=8)


def test_init_is_idempotent(cli, tiny_home):
    short_answers(tiny_home)
    code, out, err = cli("init")
    assert code == 0, err
    assert f"Home ready at {tiny_home.root}" in out
    assert f"database: {tiny_home.db_path} (schema version {migrations()[-1].version})" in out
    assert "prompt set 'default': 0 new prompts" in out
    assert stored(tiny_home, "SELECT count(*) FROM model_versions") == [(1,)]


def test_init_prepares_the_first_comparison_once(cli, tiny_home):
    """`rlhf serve` on a fresh home has a comparison to hand out the moment it answers."""
    short_answers(tiny_home)
    code, out, err = cli("init")
    assert code == 0, err
    assert "first comparison prepared" in out
    assert stored(tiny_home, "SELECT count(*), any_value(k) FROM comparisons") == [(1, 4)]
    code, out, err = cli("init")
    assert code == 0 and "first comparison" not in out, err
    assert stored(tiny_home, "SELECT count(*) FROM comparisons") == [(1,)]


def test_prompts_import_and_list(cli, tiny_home, tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "Hello?"}, {"prompt": "Bye?"}, {"prompt": "Hello?"}])
    code, out, err = cli("prompts", "import", str(path))
    assert (code, out) == (0, f"Imported 2 new prompts from {path} into set 'mine'.\n"), err
    code, out, _ = cli("prompts", "import", str(path), "--set", "other")
    assert out == f"Imported 2 new prompts from {path} into set 'other'.\n"

    code, out, _ = cli("prompts", "list", "--json")
    assert code == 0
    assert json.loads(out) == [{"prompt_set": "default", "prompts": len(default_prompts())},
                               {"prompt_set": "mine", "prompts": 2}, {"prompt_set": "other", "prompts": 2}]
    code, out, _ = cli("prompts", "list")
    assert code == 0 and "mine" in out and "other" in out and "prompt_set" in out

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"text": "no prompt field"}])
    message = assert_one_line_error(*cli("prompts", "import", str(bad)))
    assert message.startswith(f"{bad}, line 2: no recognised fields")
    assert stored(tiny_home, "SELECT count(*) FROM prompts WHERE prompt_set = 'bad'") == [(0,)]


def test_generate_and_list_comparisons(cli, tiny_home, tmp_path):
    cli("prompts", "import", str(write_jsonl(tmp_path / "few.jsonl", [{"prompt": "one"}, {"prompt": "two"}])))
    code, out, err = cli("generate", "--set", "few", "--n", "5", "--k", "3", "--max-new-tokens", "3",
                         "--seed", "7", "--json")
    assert code == 0, err
    created = json.loads(out)["comparisons"]
    assert len(created) == 2
    assert stored(tiny_home, "SELECT comparison_id, count(*), any_value(model_version), any_value(sampling)"
                  " FROM completions GROUP BY comparison_id ORDER BY comparison_id") == [
        (cid, 3, "base", json.dumps({"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 3, "seed": 7,
                                     "dtype": precision.current().dtype}))
        for cid in created]
    code, out, _ = cli("generate", "--set", "few", "--n", "5", "--k", "3", "--max-new-tokens", "3")
    assert code == 0 and out.startswith("Every prompt in the selection already has a comparison")

    code, out, _ = cli("comparisons", "--json")
    listed = json.loads(out)
    assert [c["id"] for c in listed] == created
    assert [c["prompt"] for c in listed] == ["one", "two"]
    assert all(len(c["completions"]) == 3 and c["k"] == 3 and c["rankings"] == 0 for c in listed)
    assert all(c["model_versions"] == ["base"] and c["prompt_set"] == "few" for c in listed)

    code, out, _ = cli("rank", str(created[0]), "c > a = b", "--user", "ana")
    assert out == f"Stored C > A = B for comparison {created[0]} by ana.\n"
    code, out, _ = cli("comparisons", "--pending", "--json")
    assert [c["id"] for c in json.loads(out)] == [created[1]]
    code, out, _ = cli("comparisons")
    assert code == 0 and "one" in out and "two" in out


def test_generate_refuses_bad_k_and_unknown_names(cli, tiny_home):
    message = assert_one_line_error(*cli("generate", "--k", "9", "--n", "1"))
    assert message == "K must be between 2 and 8, not 9."
    message = assert_one_line_error(*cli("generate", "--model", "v7", "--n", "1"))
    assert message == "There is no model version 'v7' (known versions: base)."
    message = assert_one_line_error(*cli("generate", "--set", "nope", "--n", "1"))
    assert message == "There is no prompt set 'nope' (known sets: default)."
    assert stored(tiny_home, "SELECT count(*) FROM comparisons") == [(0,)]


def test_rank(cli, tiny_home):
    with Workbench(tiny_home) as wb:
        [cid] = add_comparisons(wb, 1, k=3)
    code, out, err = cli("rank", str(cid), "b>a=c", "--user", "ana")
    assert (code, out, err) == (0, f"Stored B > A = C for comparison {cid} by ana.\n", "")
    assert stored(tiny_home, "SELECT annotator, source, ranking FROM rankings") == [("ana", "human", "B > A = C")]

    message = assert_one_line_error(*cli("rank", str(cid), "B > A > D", "--user", "bob"))
    assert message == "'D' is not one of the shown completions A–C."
    message = assert_one_line_error(*cli("rank", str(cid), "A > B >", "--user", "bob"))
    assert message == "The ranking ends with '>': put a completion after it."
    message = assert_one_line_error(*cli("rank", str(cid), "A > B > C", "--user", "ana"))
    assert message == f"ana already ranked comparison {cid} as 'B > A = C'; rankings are never overwritten."
    message = assert_one_line_error(*cli("rank", "999999", "A > B", "--user", "ana"))
    assert message == "There is no comparison 999999."
    assert stored(tiny_home, "SELECT count(*), (SELECT count(*) FROM ranking_ranks) FROM rankings") == [(1, 3)]


def test_rankings_import(cli, tiny_home, tmp_path):
    with Workbench(tiny_home) as wb:
        ids = add_comparisons(wb, 2, k=2)
    good = write_jsonl(tmp_path / "ranks.jsonl", [
        {"comparison_id": ids[0], "ranking": "A > B", "user": "ana"},
        {"comparison_id": ids[1], "ranking": "A = B", "user": "ana"},
    ])
    code, out, err = cli("rankings", "import", str(good))
    assert (code, out) == (0, f"Imported 2 rankings from {good}.\n"), err

    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"comparison_id": ids[0], "ranking": "B > A", "user": "bob"},
        {"comparison_id": ids[1], "ranking": "B > A", "user": "bob"},
        {"comparison_id": ids[1], "ranking": "B > C", "user": "carol"},
    ])
    message = assert_one_line_error(*cli("rankings", "import", str(bad)))
    assert message.startswith(f"{bad}, line 3: ")
    assert stored(tiny_home, "SELECT annotator, ranking FROM rankings ORDER BY id") == [("ana", "A > B"), ("ana", "A = B")]


def test_rankings_import_pairs(cli, tiny_home, tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "22"},
        {"prompt": "2+2?", "chosen": "Four", "rejected": "Five"},
    ])
    code, out, err = cli("rankings", "import", str(path), "--pairs", "--set", "pairs")
    assert code == 0, err
    assert out == f"Imported 3 preference pairs from {path} as ranked comparisons (source: import).\n"
    assert stored(tiny_home, "SELECT text FROM prompts WHERE prompt_set = 'pairs' ORDER BY id") == [("Hi",), ("2+2?",)]
    assert stored(tiny_home, "SELECT source, count(*) FROM comparisons GROUP BY source") == [("import", 3)]
    assert stored(tiny_home, "SELECT r.annotator, r.source, m.text FROM rankings r JOIN ranking_ranks rr"
                             " ON rr.ranking_id = r.id JOIN completions m ON m.id = rr.completion_id"
                             " WHERE rr.rank = 1 ORDER BY r.comparison_id") == [
        ("import:hh.jsonl", "import", text) for text in ("Hello!", "4", "Four")]  # chosen first, at either letter

    # without --pairs, the same file is not a ranking file
    message = assert_one_line_error(*cli("rankings", "import", str(path)))
    assert message.startswith(f"{path}, line 1: missing comparison_id, ranking, user")


BROKEN_PAIRS = DATA / "hh-rlhf-broken.jsonl"


def test_rankings_import_pairs_stops_at_a_broken_row_or_skips_it(cli, tiny_home):
    message = assert_one_line_error(*cli("rankings", "import", str(BROKEN_PAIRS), "--pairs"))
    assert message.startswith(f"{BROKEN_PAIRS}, line 2: chosen and rejected differ before their last answer")
    assert message.endswith("Nothing was imported; --skip-invalid imports the other rows.")
    assert stored(tiny_home, "SELECT count(*) FROM comparisons") == [(0,)]

    code, out, err = cli("rankings", "import", str(BROKEN_PAIRS), "--pairs", "--skip-invalid")
    assert code == 0, err
    assert out.splitlines() == [
        "Skipped line 2: chosen and rejected differ before their last answer: after the shared prompt,"
        " chosen goes on to another Human: turn.",
        "Skipped line 4: not valid JSON (Expecting value at column 61).",
        "Skipped line 5: chosen and rejected are identical.",
        f"Imported 3 preference pairs from {BROKEN_PAIRS} as ranked comparisons (source: import),"
        " skipped 3 unusable rows.",
    ]
    # the chosen answer (ranked first, at whichever letter it was shown) of each imported pair
    assert stored(tiny_home, "SELECT c.text FROM completions c JOIN ranking_ranks rr ON rr.completion_id = c.id"
                             " WHERE rr.rank = 1 ORDER BY c.comparison_id") == [
        ("Green, like grass.",), ("",), ("Let me see:\n\nAssistant:  Done, it is unlocked now.",)]
    message = assert_one_line_error(*cli("rankings", "import", str(BROKEN_PAIRS), "--skip-invalid"))
    assert message == "--skip-invalid goes with --pairs; a rankings file is imported whole or not at all."


def test_rankings_import_refuses_a_gzip_bomb_and_stores_nothing(cli, tiny_home, tmp_path, monkeypatch):
    from rlhf.collect import formats

    monkeypatch.setattr(formats, "READ_LIMITS", formats.ReadLimits(max_decompressed_bytes=2**20))
    bomb = tmp_path / "pairs.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 2**20) * 16)
    message = assert_one_line_error(*cli("rankings", "import", str(bomb), "--pairs", "--skip-invalid"))
    assert message == (f"{bomb}: decompresses to more than 1 MiB, the most one import may hold; decompress it and"
                       " import the plain file, or split it.")
    assert stored(tiny_home, "SELECT count(*) FROM comparisons") == [(0,)]


def test_export(cli, tiny_home, tmp_path):
    with Workbench(tiny_home) as wb:
        [cid] = add_comparisons(wb, 1, k=3)
    cli("rank", str(cid), "A > B > C", "--user", "ana")

    out_file = tmp_path / "prefs.parquet"
    code, out, err = cli("export", "--format", "preference", str(out_file), "--json")
    assert code == 0, err
    assert json.loads(out) == {"path": str(out_file), "rows": 3, "format": "preference"}
    table = read_table(out_file)
    assert list(table.columns) == ["prompt", "chosen", "rejected", "margin"]
    assert sorted((c[0]["content"], r[0]["content"], m) for c, r, m in table[["chosen", "rejected", "margin"]].values) == [
        ("answer A", "answer B", 1.0), ("answer A", "answer C", 2.0), ("answer B", "answer C", 1.0)]

    out_file = tmp_path / "best.jsonl"
    code, out, _ = cli("export", "--format", "preference", "--selection", "best_vs_worst", str(out_file))
    assert out == f"Wrote 1 preference rows to {out_file}.\n"
    assert len(read_table(out_file)) == 1

    out_file = tmp_path / "kto.jsonl"
    code, out, _ = cli("export", "--format", "unpaired", str(out_file))
    assert out == f"Wrote 2 unpaired rows to {out_file}.\n"
    assert sorted(read_table(out_file)["label"].tolist()) == [False, True]

    message = assert_one_line_error(*cli("export", "--format", "rankings", str(tmp_path / "raw.csv")))
    assert "unsupported file type" in message

    with pytest.raises(SystemExit) as caught:  # argparse refuses an unknown format itself
        cli("export", "--format", "csv", str(tmp_path / "x.parquet"))
    assert caught.value.code == 2


def test_models_json(cli, tiny_home):
    with Workbench(tiny_home) as wb:
        add_comparisons(wb, 2, k=2)
    code, out, err = cli("models", "--json")
    assert code == 0, err
    [base] = json.loads(out)
    assert {k: base[k] for k in ("name", "kind", "status", "parent", "method", "path", "completions")} == {
        "name": "base", "kind": "policy", "status": "active", "parent": None, "method": "import",
        "path": "models/base", "completions": 4}
    code, out, _ = cli("models")
    assert code == 0 and "base" in out and "active" in out


def test_console_script_when_the_store_is_held(tiny_home):
    assert RLHF.is_file(), f"the console script is not installed next to {sys.executable}"
    command = [str(RLHF), "models", "--home", str(tiny_home.root)]
    with Workbench(tiny_home):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rlhf: "), result.stderr
        assert f"(PID {os.getpid()})" in lines[0]
        assert str(tiny_home.db_path) in lines[0]
        assert "Traceback" not in result.stderr and "IO Error" not in result.stderr

        tiny_home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9999"}))
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rlhf: "), result.stderr
        assert "http://127.0.0.1:9999" in lines[0]
        assert f"PID {os.getpid()}" in lines[0]
        assert "Traceback" not in result.stderr


# -- known bugs -------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [("comparisons", "--limit", "-1"), ("generate", "--n", "-1")])
def test_negative_counts_are_refused_plainly(cli, argv):
    assert_one_line_error(*cli(*argv))
