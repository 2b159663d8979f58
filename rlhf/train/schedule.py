"""How long and how fast a job trains, decided from how much data it has.

A fixed budget does not fit a workbench whose first round is a few dozen rankings and
whose imports run to thousands: one epoch of 45 pairs is 11 optimiser steps, too few to
change what a LoRA policy does. So every method's job asks `schedule` once it knows its
training rows, and gets epochs (or, for the online methods, iterations) and a learning
rate with one line saying why, which the job logs and keeps in its metrics. A setting the
user gave always wins; the rule only fills in what was left to it.

The rule, offline (reward, sft, dpo, kto, pretrain on its corpus's chunks; spin in each iteration): at least `min_steps` optimiser steps, reached by
repeating a small set for more epochs, at most `max_epochs` passes; a large set trains one
epoch. Online (ppo, grpo, rloo): one pass over the prompts, but at least
`min_online_samples` and at most `max_online_samples` sampled completions. Learning rates
depend on the method and on what is trained (a LoRA, full weights, a soft prompt).

Pure and torch-free: the methods table and the Train tab read it without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlhf.settings import setting

OFFLINE = ("reward", "sft", "dpo", "kto", "spin", "pretrain")
ONLINE = ("ppo", "grpo", "rloo")

# LoRA (r=16, alpha=32, every linear layer) on SmolLM2-135M learns at about 1e-4 to 3e-4:
# the demo's DPO and KTO move the policy at 3e-4 in 30 steps; 5e-5 in 11 steps did not.
# Full weights take one to two orders of magnitude less; a soft prompt (a few vectors
# alone) far more. QLoRA trains a LoRA and takes its rate. The top layers alone (last_layers)
# take a little more than full weights: fewer weights move, and they hold less of the model.
# The prefix (PEFT's prefix-tuning examples: 1e-2), IA3 (T-Few, Liu et al. 2022: 3e-3) and
# bottleneck (LLM-Adapters, Hu et al. 2023: 3e-4) rates are the literature's, not tuned here;
# `python -m rlhf.bench adapters` shows each moving the held-out DPO margin at them.
# GRPO and RLOO with LoRA at 1e-4 did not move: the length rule's grid cell at 60
# comparisons (`python -m rlhf.bench learn`) ran 60 steps of one prompt's 4 samples and
# ended at a training KL of 0.002 and +1.3 points on the rule, with a reward model of 0.89
# held-out accuracy; the real-model GRPO and RLOO tests learn at 1e-3 in 4 steps.
LEARNING_RATES: dict[str, dict[str, float]] = {
    "lora": {"reward": 2e-4, "sft": 2e-4, "dpo": 2e-4, "kto": 2e-4, "ppo": 1e-4, "grpo": 5e-4, "rloo": 5e-4},
    "full": {"reward": 1e-5, "sft": 2e-5, "dpo": 5e-6, "kto": 5e-6, "ppo": 5e-6, "grpo": 5e-6, "rloo": 5e-6},
    "last_layers": {"reward": 3e-5, "sft": 5e-5, "dpo": 1e-5, "kto": 1e-5, "ppo": 1e-5, "grpo": 1e-5, "rloo": 1e-5},
    "prefix": {"reward": 1e-2, "sft": 1e-2, "dpo": 1e-2, "kto": 1e-2, "ppo": 5e-3, "grpo": 5e-3, "rloo": 5e-3},
    "ia3": {"reward": 3e-3, "sft": 3e-3, "dpo": 3e-3, "kto": 3e-3, "ppo": 1e-3, "grpo": 1e-3, "rloo": 1e-3},
    "bottleneck": {"reward": 3e-4, "sft": 3e-4, "dpo": 3e-4, "kto": 3e-4, "ppo": 1e-4, "grpo": 1e-4, "rloo": 1e-4},
    "prompt": {"reward": 3e-2, "sft": 3e-2, "dpo": 3e-2, "kto": 3e-2, "ppo": 1e-2, "grpo": 1e-2, "rloo": 1e-2},
}
for _rates in LEARNING_RATES.values():  # SPIN trains DPO in each iteration, at DPO's rates
    _rates["spin"] = _rates["dpo"]
    _rates["pretrain"] = _rates["sft"]  # next-token loss on raw text: SFT's loss on every token
ADAPTER_WORDS = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning", "prompt": "a soft prompt",
                 "prefix": "a prefix", "ia3": "IA3", "bottleneck_serial": "serial bottleneck adapters",
                 "bottleneck_parallel": "parallel bottleneck adapters",
                 "last_layers": "the top layers"}
METHOD_WORDS = {"reward": "a reward model", "sft": "SFT", "dpo": "DPO", "kto": "KTO", "ppo": "PPO",
                "grpo": "GRPO", "rloo": "RLOO", "spin": "SPIN",
                "pretrain": "continued pretraining"}


def decided_keys(method: str) -> tuple[str, ...]:
    """The trainer settings the rule fills in for `method` when the job leaves them out."""
    if method in OFFLINE:
        return ("learning_rate", "num_train_epochs")
    return ("learning_rate", "max_steps") if method in ONLINE else ()


def lora_rate(method: str) -> float:
    """The default learning rate of `method` with the default adapter (LoRA)."""
    return LEARNING_RATES["lora"][method]


@dataclass(frozen=True)
class ScheduleDefaults:
    """The rule's constants; each applies only where the job's settings leave it the choice."""

    min_steps: int = setting(40, "fewest optimiser steps of an offline job (reward, sft, dpo, kto): a small set is"
                                 " repeated for more epochs until it gets there")
    max_epochs: int = setting(8, "most passes over a small set, so that a dozen rows are not learnt by heart")
    min_online_samples: int = setting(80, "fewest completions an online job (ppo, grpo, rloo) samples and learns from")
    max_online_samples: int = setting(240, "most completions an online job samples by default, however many prompts"
                                           " there are (each costs generation time)")
    learning_rates: Mapping[str, Mapping[str, float]] = setting(
        help="learning rate by what is trained (lora, full, prompt; qlora as lora) and method",
        factory=lambda: LEARNING_RATES)


DEFAULTS = ScheduleDefaults()


@dataclass(frozen=True)
class Schedule:
    """What a job trains for: `settings` holds only the values the rule chose (the trainer
    config fields the user did not give), `reason` says what and why in one line."""

    rows: int
    steps: int
    learning_rate: float
    epochs: float | None
    settings: dict[str, Any]
    reason: str

    def metrics(self) -> dict[str, float]:
        """The decision as numbers for the job's metrics (and so its model card)."""
        values = {"schedule/rows": float(self.rows), "schedule/steps": float(self.steps),
                  "schedule/learning_rate": float(self.learning_rate)}
        if self.epochs is not None:
            values["schedule/epochs"] = float(self.epochs)
        return values


def schedule(rows: int, method: str, adapter: str, per_step: int, given: Mapping[str, Any] | None = None,
             samples_per_prompt: int = 1, what: str = "rows",
             defaults: ScheduleDefaults = DEFAULTS) -> Schedule:
    """The schedule of a `method` job on `rows` training rows (offline: examples; online:
    prompts) that trains `adapter` at `per_step` rows (online: sampled completions) per
    optimiser step, `samples_per_prompt` completions per prompt (GRPO and RLOO's
    num_generations). `given`: the trainer settings the user set (learning_rate,
    num_train_epochs, max_steps), which are kept. `what` names the rows in the reason."""
    if method not in OFFLINE + ONLINE:
        raise ValueError(f"no schedule for method '{method}'")
    if rows < 1 or per_step < 1 or samples_per_prompt < 1:
        raise ValueError(f"a schedule needs rows, per_step and samples_per_prompt of at least 1, not"
                         f" {rows}, {per_step}, {samples_per_prompt}")
    given = dict(given or {})
    settings: dict[str, Any] = {}
    if "learning_rate" in given:
        rate, rate_why = float(given["learning_rate"]), "learning_rate as set"
    else:
        table = {"qlora": "lora", "bottleneck_serial": "bottleneck", "bottleneck_parallel": "bottleneck"}
        rate = float(defaults.learning_rates[table.get(adapter, adapter)][method])
        rate_why = f"lr for {METHOD_WORDS[method]} with {ADAPTER_WORDS.get(adapter, adapter)}"
        settings["learning_rate"] = rate
    if method in ONLINE:
        steps, epochs, why = _online_steps(rows, per_step, samples_per_prompt, given, defaults, settings, what)
        head = f"{rows} {what}: {_count(steps, 'step')} of {per_step} samples"
    else:
        steps, epochs, why = _offline_steps(rows, per_step, given, defaults, settings, what)
        head = f"{rows} {what}: " + (f"{_count(epochs, 'epoch')}, " if epochs is not None else "") \
            + _count(steps, "step")
    reason = f"{head}, lr {_rate(rate)} ({why}; {rate_why})"
    return Schedule(rows, steps, rate, epochs, settings, reason)


def _offline_steps(rows: int, per_step: int, given: dict[str, Any], defaults: ScheduleDefaults,
                   settings: dict[str, Any], what: str) -> tuple[int, float | None, str]:
    per_epoch = math.ceil(rows / per_step)
    pace = f"{_count(per_epoch, 'step')} an epoch at {per_step} {what} a step"
    max_steps = int(given.get("max_steps") or -1)
    if max_steps > 0:  # TRL: max_steps overrides the epochs
        return max_steps, None, "max_steps as set"
    if "num_train_epochs" in given:
        epochs = float(given["num_train_epochs"])
        return math.ceil(per_epoch * epochs), _whole(epochs), f"{pace}; num_train_epochs as set"
    wanted = math.ceil(defaults.min_steps / per_epoch)
    epochs = max(1, min(wanted, defaults.max_epochs))
    settings["num_train_epochs"] = epochs
    if wanted <= 1:
        why = f"{pace}: one epoch passes the {defaults.min_steps}-step floor"
    elif epochs < wanted:
        why = f"{pace}; {defaults.min_steps} steps would take {wanted} epochs, {defaults.max_epochs} at most"
    else:
        why = f"{pace}; {_count(epochs, 'epoch')} reach the {defaults.min_steps}-step floor"
    return per_epoch * epochs, epochs, why


def _online_steps(rows: int, per_step: int, samples_per_prompt: int, given: dict[str, Any],
                  defaults: ScheduleDefaults, settings: dict[str, Any], what: str) -> tuple[int, None, str]:
    if int(given.get("max_steps") or -1) > 0:
        return int(given["max_steps"]), None, "max_steps as set"
    prompts_per_step = max(1, per_step // samples_per_prompt)
    one_pass = math.ceil(rows / prompts_per_step)
    floor = math.ceil(defaults.min_online_samples / per_step)
    ceiling = max(floor, defaults.max_online_samples // per_step)
    steps = min(max(one_pass, floor), ceiling)
    settings["max_steps"] = steps
    if steps == one_pass:
        why = f"one pass over the {what} at {prompts_per_step} a step"
    elif steps == floor:
        why = (f"one pass over the {what} would be {_count(one_pass, 'step')}; at least"
               f" {defaults.min_online_samples} samples")
    else:
        why = (f"one pass over the {what} would be {_count(one_pass, 'step')}; at most"
               f" {defaults.max_online_samples} samples")
    return steps, None, why


def _whole(number: float) -> float:
    return int(number) if float(number).is_integer() else number


def _count(number: float, noun: str) -> str:
    return f"{_whole(number)} {noun}" + ("" if number == 1 else "s")


def _rate(rate: float) -> str:
    """2e-4, not 0.0002 or 2.00e-04: as learning rates are written."""
    mantissa, exponent = f"{rate:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
