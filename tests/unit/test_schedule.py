"""The data-sized schedule (rlhf.train.schedule): hand-computed epochs, steps and learning
rates for every method, the user's settings kept, and the reason each job logs."""

from __future__ import annotations

import dataclasses

import pytest

from rlhf.train.methods import METHODS
from rlhf.train.ppo import PPOConfig
from rlhf.train.schedule import DEFAULTS, LEARNING_RATES, OFFLINE, ONLINE, ScheduleDefaults, decided_keys, schedule


@pytest.mark.parametrize(
    ("rows", "per_step", "epochs", "steps"),
    [
        (60, 4, 3, 45),     # 15 steps an epoch: 3 epochs pass the 40-step floor
        (45, 4, 4, 48),     # the issue's 45 usable pairs: 12 an epoch, so 4 epochs
        (40, 4, 4, 40),     # 10 an epoch: exactly the floor in 4
        (200, 4, 1, 50),    # one epoch is already past the floor
        (10, 4, 8, 24),     # 3 an epoch: the floor would take 14 epochs, 8 at most
        (1594, 8, 1, 200),  # the HH-RLHF pairs, reward batches of 8
        (1, 8, 8, 8),
    ],
)
def test_offline_epochs_reach_the_step_floor_within_the_epoch_cap(rows, per_step, epochs, steps):
    decided = schedule(rows, "dpo", "lora", per_step)
    assert (decided.epochs, decided.steps) == (epochs, steps)
    assert decided.settings == {"num_train_epochs": epochs, "learning_rate": 2e-4}


def test_the_issue_example_reads_as_one_line():
    decided = schedule(60, "dpo", "lora", 4, what="pairs")
    assert decided.reason == ("60 pairs: 3 epochs, 45 steps, lr 2e-4 (15 steps an epoch at 4 pairs a step;"
                              " 3 epochs reach the 40-step floor; lr for DPO with LoRA)")
    assert decided.metrics() == {"schedule/rows": 60.0, "schedule/steps": 45.0, "schedule/learning_rate": 2e-4,
                                 "schedule/epochs": 3.0}


@pytest.mark.parametrize(
    ("method", "adapter", "rate"),
    [
        ("dpo", "lora", 2e-4), ("dpo", "qlora", 2e-4), ("dpo", "full", 5e-6), ("dpo", "prompt", 3e-2),
        ("kto", "lora", 2e-4), ("sft", "lora", 2e-4), ("sft", "full", 2e-5), ("reward", "lora", 2e-4),
        ("reward", "full", 1e-5), ("ppo", "lora", 1e-4), ("grpo", "full", 5e-6), ("rloo", "prompt", 1e-2),
    ],
)
def test_learning_rate_fits_the_method_and_what_is_trained(method, adapter, rate):
    decided = schedule(100, method, adapter, 4, samples_per_prompt=4 if method in ("grpo", "rloo") else 1)
    assert decided.learning_rate == decided.settings["learning_rate"] == rate


def test_settings_the_user_gave_always_win():
    decided = schedule(60, "dpo", "lora", 4, given={"num_train_epochs": 1, "learning_rate": 5e-5}, what="pairs")
    assert (decided.epochs, decided.steps, decided.learning_rate, decided.settings) == (1, 15, 5e-5, {})
    assert decided.reason == ("60 pairs: 1 epoch, 15 steps, lr 5e-5 (15 steps an epoch at 4 pairs a step;"
                              " num_train_epochs as set; learning_rate as set)")

    capped = schedule(60, "kto", "full", 4, given={"max_steps": 2})
    assert (capped.epochs, capped.steps, capped.settings) == (None, 2, {"learning_rate": 5e-6})
    assert "max_steps as set" in capped.reason

    # TRL's max_steps=-1 means "use the epochs"; a fraction of an epoch is the user's to ask for
    half = schedule(60, "sft", "lora", 4, given={"max_steps": -1, "num_train_epochs": 0.5})
    assert (half.epochs, half.steps) == (0.5, 8)


@pytest.mark.parametrize(
    ("method", "prompts", "per_step", "per_prompt", "steps"),
    [
        ("ppo", 200, 8, 1, 25),    # one pass over 200 prompts at 8 an iteration
        ("ppo", 40, 8, 1, 10),     # one pass would be 5 iterations: at least 80 samples
        ("ppo", 1000, 8, 1, 30),   # at most 240 samples
        ("grpo", 30, 4, 4, 30),    # one prompt a step (4 generations of it)
        ("grpo", 12, 4, 4, 20),    # floor: 80 samples
        ("rloo", 500, 8, 4, 30),   # two prompts a step; cap: 240 samples
    ],
)
def test_online_steps_pass_over_the_prompts_within_the_sample_bounds(method, prompts, per_step, per_prompt, steps):
    decided = schedule(prompts, method, "lora", per_step, samples_per_prompt=per_prompt, what="prompts")
    assert (decided.steps, decided.epochs) == (steps, None)
    rate, said = {"ppo": (1e-4, "1e-4"), "grpo": (5e-4, "5e-4"), "rloo": (5e-4, "5e-4")}[method]
    assert decided.settings == {"max_steps": steps, "learning_rate": rate}
    assert decided.reason.startswith(f"{prompts} prompts: {steps} steps of {per_step} samples, lr {said} (")


def test_the_defaults_are_a_dataclass_with_help_and_can_be_changed():
    assert all(f.metadata.get("help") for f in dataclasses.fields(ScheduleDefaults))
    tight = ScheduleDefaults(min_steps=10, max_epochs=2)
    assert schedule(8, "sft", "lora", 4, defaults=tight).epochs == 2
    assert schedule(8, "sft", "lora", 4).epochs == DEFAULTS.max_epochs


def test_every_method_has_a_schedule_and_its_shown_defaults_are_the_lora_ones():
    scheduled = {name: spec for name, spec in METHODS.items() if spec.scheduled}
    assert set(OFFLINE + ONLINE) == set(scheduled) and set(METHODS) - set(scheduled) == {"reward_head"}
    for adapter in ("lora", "full", "prompt", "last_layers"):
        assert set(LEARNING_RATES[adapter]) == set(scheduled)
    for name, spec in scheduled.items():
        shown = spec.defaults.get("learning_rate", PPOConfig().learning_rate if name == "ppo" else None)
        assert shown == LEARNING_RATES["lora"][name]
    # the online methods' shown max_steps is the floor of 80 samples
    assert METHODS["grpo"].defaults["max_steps"] * METHODS["grpo"].defaults["per_device_train_batch_size"] == 80
    assert PPOConfig().max_steps * PPOConfig().batch_size == 80


def test_nonsense_is_refused():
    with pytest.raises(ValueError, match="no schedule for method 'magic'"):
        schedule(10, "magic", "lora", 4)
    with pytest.raises(ValueError, match="at least 1"):
        schedule(0, "dpo", "lora", 4)


@pytest.mark.parametrize("method", OFFLINE + ONLINE)
def test_the_keys_said_to_be_decided_are_the_ones_the_rule_fills_in(method):
    decided = schedule(60, method, "lora", per_step=4, samples_per_prompt=4 if method in ("grpo", "rloo") else 1)
    assert set(decided.settings) == set(decided_keys(method))
    assert decided_keys("reward_head") == ()
