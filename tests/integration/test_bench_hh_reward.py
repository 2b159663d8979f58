"""`python -m rlhf.bench hh_reward` end to end on the tiny random model and the repo's
HH-RLHF quirks file: rows held out by line are never imported, the reward job trains on
the rest, and the held-out rows are scored with an interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.bench.__main__ import main
from rlhf.bench.hh_reward import split_lines
from rlhf.home import Home

QUIRKS = Path(__file__).parents[1] / "data" / "hh-rlhf-quirks.jsonl"


def test_split_lines_is_seeded_and_disjoint(tmp_path):
    train, held = split_lines(QUIRKS, 2, 0, tmp_path)
    rows = lambda path: path.read_text().splitlines()  # noqa: E731
    assert len(rows(held)) == 2 and len(rows(train)) == 5 and not set(rows(held)) & set(rows(train))
    again = tmp_path / "again"
    again.mkdir()
    assert rows(split_lines(QUIRKS, 2, 0, again)[1]) == rows(held)


@pytest.mark.integration
def test_the_default_reward_job_is_scored_on_rows_it_never_saw(tmp_path, tiny_model_dir, one_thread, capsys):
    home = Home(tmp_path / "home")
    home.prepare()
    home.link_base_model(tiny_model_dir)
    assert main(["hh_reward", "--data", str(QUIRKS), "--held-out", "2", "--set", "max_steps=2",
                 "--home", str(home.root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["imported"] == 5 and result["job"]["status"] == "succeeded"
    assert result["settings"] == {"max_steps": 2} and result["job"]["steps"] == 2
    held = result["held_out_figures"]
    assert held["pairs"] == 2 and held["right"] + held["wrong"] + held["ties"] == 2
