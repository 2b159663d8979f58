"""The guardrails' pure parts, with hand-computed values: the repetition measure, the
implicit reward accuracy, the too-little / too-far rule, their settings and how the
tables show them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from app import job_views
from rlhf.train.guard import (
    Figures,
    implicit_accuracy,
    kto_pairs,
    prompts_of,
    repetition_rate,
    seq_rep,
    verdict,
    within_noise,
)
from rlhf.train.methods import METHODS, SettingsError, options_of, resolve


def test_seq_rep_is_the_share_of_repeated_four_grams():
    # 8 words: abcd bcda cdab dabc abcd -> 5 four-grams, 4 distinct -> 1 - 4/5
    assert seq_rep("a b c d a b c d") == pytest.approx(0.2)
    # 6 words, 3 four-grams, all alike -> 1 - 1/3; case does not matter
    assert seq_rep("Go go GO go go go") == pytest.approx(2 / 3)
    assert seq_rep("one two three") == 0.0  # no four-gram at all
    assert seq_rep("the cat sat on the mat") == 0.0


def test_repetition_rate_counts_answers_with_over_half_their_four_grams_repeated():
    loop = "go " * 10  # 7 four-grams, 1 distinct: 6/7 repeated
    assert repetition_rate([loop, "a b c d a b c d", "short answer"]) == pytest.approx(1 / 3)
    assert repetition_rate(["a b c d a b c d"], threshold=0.1) == 1.0
    assert math.isnan(repetition_rate([]))


def test_implicit_accuracy_counts_ties_half():
    assert implicit_accuracy([1.0, -1.0, 0.0, 2.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert implicit_accuracy([0.0] * 5) == 0.5  # an unchanged policy: exactly chance
    assert math.isnan(implicit_accuracy([]))


def test_within_noise_is_two_standard_errors_of_a_coin():
    assert within_noise(0.6, 100)       # 2 * 0.5 / sqrt(100) = 0.1
    assert not within_noise(0.61, 100)
    assert within_noise(0.25, 16)       # 2 * 0.5 / 4 = 0.25
    assert not within_noise(0.2, 16)


LIMITS = {"max_kl": 20.0, "max_repetition": 0.3}


def test_a_job_that_moved_too_far_says_so_and_what_to_change():
    far = verdict(Figures(accuracy=0.9, pairs=40, kl=31.0, kl_stderr=2.0, repetition=0.5), "dpo", **LIMITS)
    assert far.startswith("This job moved too far:")
    assert "31 nats" in far and "max_kl 20" in far and "50%" in far and "max_repetition 0.3" in far
    assert "learning_rate" in far and "num_train_epochs" in far and "beta" in far
    online = verdict(Figures(kl=25.0, kl_stderr=1.0), "grpo", **LIMITS)
    assert "max_steps" in online and "repetition" not in online


def test_a_job_that_moved_too_little_says_so_and_what_to_try():
    still = verdict(Figures(accuracy=0.5, pairs=40, kl=0.01, kl_stderr=0.01), "dpo", **LIMITS)
    assert still.startswith("This job moved too little:")
    assert "0.01 nats" in still and "0.50 on 40 pairs" in still
    assert "num_train_epochs" in still and "learning_rate" in still
    # a KL within two standard errors of 0 is noise, however large its mean
    noisy = verdict(Figures(kl=0.3, kl_stderr=0.2), "ppo", **LIMITS)
    assert "moved too little" in noisy and "max_steps" in noisy
    # accuracy within noise alone is enough, where the pairs could have told learning apart
    assert "0.55 on 30 pairs" in verdict(Figures(accuracy=0.55, pairs=30, kl=2.0, kl_stderr=0.3), "kto", **LIMITS)


def test_too_few_held_out_pairs_to_tell_chance_from_learning_is_said_as_that():
    # the length rule's KTO cell at 60 comparisons: +26 points on the rule, 0.80 on 10 held-out pairs
    # (two standard errors, 0.32, reach both 0.5 and 0.75), KL 3.5
    said = verdict(Figures(accuracy=0.8, pairs=10, kl=3.5, kl_stderr=0.4), "kto", **LIMITS)
    assert said.startswith("Its held-out accuracy 0.80 on 10 pairs is too few pairs to tell it from chance")
    assert "3.5 nats" in said and "eval_fraction" in said and "moved too little" not in said
    # with no movement to show either, it did move too little
    assert verdict(Figures(accuracy=0.8, pairs=10, kl=0.01, kl_stderr=0.01), "kto", **LIMITS).startswith(
        "This job moved too little:")


def test_a_job_that_moved_clearly_and_within_bounds_says_nothing():
    assert verdict(Figures(accuracy=0.8, pairs=40, kl=2.0, kl_stderr=0.3, repetition=0.1), "dpo", **LIMITS) is None
    # too few pairs to tell anything from the accuracy
    assert verdict(Figures(accuracy=0.5, pairs=3, kl=2.0, kl_stderr=0.3), "dpo", **LIMITS) is None
    assert verdict(Figures(), "sft", **LIMITS) is None  # nothing measured
    # held-out accuracy clearly above chance: the job moved, though its short samples barely differ
    # (the real-model DPO test: margin up ~2 nats, sampled KL -0.03 +- 0.05)
    assert verdict(Figures(accuracy=0.9, pairs=40, kl=-0.03, kl_stderr=0.05), "dpo", **LIMITS) is None


def test_figures_keep_only_measured_values():
    assert Figures(kl=1.5, kl_stderr=math.nan, prompts=4).metrics() == {"guard/kl": 1.5, "guard/prompts": 4.0}
    assert Figures(accuracy=0.5, pairs=6).metrics() == {"guard/heldout_accuracy": 0.5, "guard/heldout_pairs": 6.0}
    assert Figures().metrics() == {}  # skipped: nothing logged


def test_kto_rows_pair_within_their_comparison():
    frame = pd.DataFrame({"comparison_id": [1, 1, 1, 2, 2], "prompt": ["p", "p", "p", "q", "q"],
                          "completion": ["good", "bad1", "bad2", "ok", "meh"],
                          "label": [True, False, False, True, True]})
    pairs = kto_pairs(frame)
    assert pairs.to_dict("records") == [{"prompt": "p", "chosen": "good", "rejected": "bad1"},
                                        {"prompt": "p", "chosen": "good", "rejected": "bad2"}]


def test_prompts_come_from_held_out_rows_first_without_repeats():
    held_out = pd.DataFrame({"prompt": [[{"role": "user", "content": "a"}]] * 2})
    train = pd.DataFrame({"prompt": [[{"role": "user", "content": c}] for c in "abc"]})
    assert [p[0]["content"] for p in prompts_of(held_out, train, limit=2)] == ["a", "b"]
    assert prompts_of(held_out, train, limit=0) == []


def test_every_policy_method_has_the_guard_settings_and_the_reward_model_none():
    for spec in METHODS.values():
        has = {"guard_prompts", "guard_max_new_tokens", "guard_pairs", "max_kl", "max_repetition"} <= set(
            options_of(spec))
        assert has == (spec.kind == "policy"), spec.name
    assert resolve("dpo", {"guard_prompts": 0})[1]["guard_prompts"] == 0
    for bad in ({"guard_prompts": -1}, {"max_kl": 0}, {"max_repetition": 1.5}, {"guard_max_new_tokens": 0}):
        with pytest.raises(SettingsError):
            resolve("dpo", bad)
    with pytest.raises(SettingsError, match="no setting 'guard_prompts'"):
        resolve("reward", {"guard_prompts": 4})


GUARDED = {"guard/heldout_accuracy": 0.625, "guard/heldout_pairs": 8.0, "guard/kl": 0.0123,
           "guard/repetition": 0.25, "train/loss": 0.6,
           "guard/verdict": "This job moved too little: its KL to the parent is 0.0123 nats per completion."}


def test_the_tables_and_the_job_line_show_the_guardrails():
    versions = pd.DataFrame([{"name": "dpo-1", "kind": "policy", "status": "candidate", "parent": "base",
                              "method": "dpo", "job_id": 1, "metrics": GUARDED, "created_at": None}])
    row = job_views.models_table(versions).iloc[0]
    assert (row["held-out acc"], row["KL"], row["repetition"]) == ("0.625", "0.0123", "25%")
    assert row["guardrail"].startswith("This job moved too little")
    assert "guard" not in row["metrics"] and "train/loss" in row["metrics"]
    summary = job_views.guard_summary(GUARDED)
    assert summary.startswith("held-out accuracy 0.62 on 8 pairs, KL to parent 0.0123 nats, repetition 25%.")
    assert "moved too little" in summary
    assert job_views.guard_summary({"guard/note": "no held-out accuracy: SFT's data has no preference pairs"}) \
        == "no held-out accuracy: SFT's data has no preference pairs"


def test_the_guard_plot_holds_accuracy_and_kl_from_start_to_end():
    metrics = pd.DataFrame({"step": [0, 0, 1, 3, 3, 3], "value": [0.5, 0.0, 0.7, 0.75, 1.2, 0.1],
                            "name": ["guard/heldout_accuracy", "guard/kl", "loss", "guard/heldout_accuracy",
                                     "guard/kl", "guard/kl_stderr"]})
    frame = job_views.guard_frame(metrics)
    assert frame.to_dict("list") == {"step": [0, 3, 0, 3], "value": [0.5, 0.75, 0.0, 1.2],
                                     "name": ["guard/heldout_accuracy"] * 2 + ["guard/kl"] * 2}
    assert job_views.guard_frame(pd.DataFrame(columns=["step", "name", "value"])).empty
    # they have their own plot, so the metrics plot's defaults leave them out
    assert job_views.default_metric_names(["guard/kl", "eval/rewards/accuracies"]) == ["eval/rewards/accuracies"]
