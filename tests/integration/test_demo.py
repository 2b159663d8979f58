"""`rlhf demo` on the real default model with a tiny budget: one round of the whole loop
(generate, simulated ranking, reward model, DPO, promote, judge against the base)."""

from __future__ import annotations

import json

import pytest

from safetensors.torch import load_file

from app.cli import main
from rlhf.bench.demo import DemoConfig, check, win_rate_against_base
from rlhf.modeling.model_cache import ModelCache
from rlhf.home import Home
from rlhf.collect.workbench import Workbench

try:
    from tests.conftest import make_home
except ImportError:
    from conftest import make_home


@pytest.mark.integration
def test_one_round_demo_closes_the_loop(tmp_path, real_model_dir, capsys):
    home = make_home(tmp_path / "demo", real_model_dir)  # the converted model, so the demo need not convert
    code = main(["demo", "--home", str(home.root), "--rounds", "1", "--prompts-per-round", "4",
                 "--held-out", "4", "--max-new-tokens", "16", "--json", "--plot", str(tmp_path / "rounds.png")])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    [row] = result["rounds"]
    assert row["round"] == 1 and row["comparisons"] == 4 and row["rankings"] == 4
    assert 0.0 <= row["win_rate_vs_base"] <= 1.0 and row["wins"] + row["ties"] + row["losses"] == 4
    with Workbench(Home(home.root)) as wb:
        versions = wb.models().set_index("name")
        assert versions.loc[row["reward_version"], "kind"] == "reward"
        assert versions.loc[row["policy_version"], "status"] == "active"
        assert versions.loc[row["policy_version"], "parent"] == "base"
        rankings = wb.rankings()
        assert set(rankings["source"]) == {"simulated"} and set(rankings["user"]) == {"shorter@flip=0.1"}
        assert wb.current_round().number == 2  # promotion started the next round
    steps = [line for line in err.splitlines() if line.startswith("[")]
    assert "round 1: generating 4 comparisons of K=4 from base" in steps[0]
    assert "training a reward model on 4 rankings" in steps[1] and "with dpo" in steps[2]
    assert (tmp_path / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the figures printed are a tally of the held-out prompts, and judging again finds them
    assert row["win_rate_vs_base"] == pytest.approx((row["wins"] + row["ties"] / 2) / 4)
    config = DemoConfig(rounds=1, prompts_per_round=4, held_out=4, max_new_tokens=16)
    with Workbench(Home(home.root)) as wb:
        judged = win_rate_against_base(wb, row["policy_version"], check(config).with_noise(flip_prob=0.0, tie_prob=0.0), config,
                                       ModelCache())
        policy_path = wb.model_version(row["policy_version"]).path
    assert (judged["wins"], judged["ties"], judged["losses"]) == (row["wins"], row["ties"], row["losses"])
    # the trained policy is not the base: LoRA starts with B = 0, so a non-zero B was learned
    adapter = load_file(policy_path / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().max() > 0 for tensor in lora_b)


def test_demo_refuses_a_home_with_rankings_and_a_bad_annotator(tiny_home, capsys):
    assert main(["demo", "--home", str(tiny_home.root), "--annotator", "friendlier"]) == 1
    assert "friendlier" in capsys.readouterr().err
    with Workbench(tiny_home) as wb:
        [comparison_id] = wb.generate(n=1, k=2)
        wb.rank(comparison_id, "A > B", "ana")
    assert main(["demo", "--home", str(tiny_home.root)]) == 1
    assert "fresh home" in capsys.readouterr().err


@pytest.mark.parametrize("wins, n", [(0, 32), (16, 32), (28, 32), (32, 32), (3, 7)])
def test_the_plots_interval_is_wilsons(wins, n):
    from scipy.stats import binomtest

    from rlhf.bench.demo import wilson_interval

    expected = binomtest(wins, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(wins / n, n)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-4)
    assert 0.0 <= low <= wins / n <= high <= 1.0 + 1e-12
