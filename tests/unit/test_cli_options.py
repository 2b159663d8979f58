"""The `rlhf` command line's shared options: --home and --json count wherever they are
given, before a subcommand or after it."""

from __future__ import annotations

import json

import pytest

from app.cli import build_parser, main


@pytest.mark.parametrize("argv", [["jobs", "--json", "show", "3"], ["jobs", "show", "3", "--json"]])
def test_json_and_home_before_or_after_a_subcommand_are_kept(argv):
    args = build_parser().parse_args(argv[:1] + ["--home", "/h"] + argv[1:])
    assert (args.json, args.home, args.job_id) == (True, "/h", 3)


def test_the_defaults_hold_when_neither_is_given():
    args = build_parser().parse_args(["jobs", "show", "3"])
    assert (args.json, args.home) == (False, None)
    assert build_parser().parse_args(["models"]).json is False


def test_jobs_json_show_prints_json(tmp_path, capsys):
    job_dir = tmp_path / "home" / "jobs" / "3"
    job_dir.mkdir(parents=True)
    (job_dir / "spec.json").write_text(json.dumps({"method": "dpo", "base": "base", "rows": 12}))
    (job_dir / "status.json").write_text(json.dumps({"state": "done", "metrics": {"loss": 0.5}}))
    assert main(["jobs", "--json", "--home", str(tmp_path / "home"), "show", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"job_id": 3, "method": "dpo", "base": "base", "status": "done",
                                                   "error": None, "metrics": {"loss": 0.5}}
