"""`python -m rlhf.bench learn` end to end on the tiny random model: two cells of one size
(comparisons generated once and ranked by each rule, a default DPO job, held-out shares
before and after), then a rerun that reads the finished cells back instead of training again."""

from __future__ import annotations

import json

import pytest

from rlhf.bench.__main__ import main
from rlhf.home import Home


@pytest.mark.integration
def test_one_cell_runs_and_a_rerun_resumes(tmp_path, tiny_model_dir, one_thread, capsys):
    out = tmp_path / "learn"
    base_home = Home(out / "base-home")
    base_home.prepare()
    base_home.link_base_model(tiny_model_dir)  # the benchmark's shared base: here the tiny model
    # 50 tokens of the random model (its 4,096-token vocabulary) run to about 250 characters, either side of the rule's line: some pairs
    args = ["learn", "--rules", "length,topic", "--methods", "dpo", "--sizes", "4", "--held-out", "4", "--answers", "8",
            "--max-new-tokens", "50", "--out", str(out), "--json"]
    assert main(args) == 0
    printed, steps = capsys.readouterr()
    [row, other] = json.loads(printed)
    assert other["rule"] == "topic"  # trained or, with no usable pairs, recorded as skipped
    assert steps.count("generating comparisons") == 1  # both rules rank the same comparisons
    assert (row["rule"], row["method"], row["size"], row["comparisons"]) == ("length", "dpo", 4, 4)
    for side in ("before", "after"):
        assert row[side]["n"] == 8 and 0 <= row[side]["low"] <= row[side]["share"] <= row[side]["high"] <= 1
    assert row["kl"] is not None and row["repetition"] is not None and "epochs" in row["schedule"]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2

    assert main(args[:-1]) == 0  # the table this time
    printed, steps = capsys.readouterr()
    assert "done before" in steps and "training" not in steps
    assert "| length | dpo | 4 |" in printed and len((out / "results.jsonl").read_text().splitlines()) == 2
