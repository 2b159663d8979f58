"""Supervised fine-tuning of the policy on prompt/completion rows (written better answers
and/or top-ranked completions), with TRL's SFTTrainer (through :mod:`rlhf.train.plumbing`).
"""

from __future__ import annotations

from rlhf.errors import TrainingError
from rlhf.train import common, guard
from rlhf.train.common import TrainInputs
from rlhf.train.plumbing import (
    MicroBatch,
    conversational,
    fit,
    has_text,
    load_trl_policy,
    require_columns,
    split,
    trainer_config,
    trl_trainer,
)

SFT_COLUMNS = ["prompt", "completion"]


def train(inputs: TrainInputs) -> dict[str, float]:
    """SFT on `prompt` (messages) -> `completion` ([assistant message]) rows; the loss is
    on the completion tokens only. Returns train/eval loss and example counts."""
    from trl import SFTConfig, SFTTrainer

    frame = inputs.data
    require_columns(frame, SFT_COLUMNS, "SFT")
    frame = frame[[has_text(c) for c in frame["completion"]]] if len(frame) else frame
    if len(frame) == 0:
        raise TrainingError("SFT needs at least one prompt with a completion to imitate (a written better answer"
                            " or a top-ranked completion).")
    frame = conversational(frame, completions=("completion",))
    train_frame, eval_frame = split(inputs, frame)
    decided = common.plan(inputs, "sft", len(train_frame), common.examples_per_step(inputs.config),
                          "demonstrations")
    policy = load_trl_policy(inputs)
    config = trainer_config(SFTConfig, inputs, MicroBatch.of(policy, train_frame, ("completion",)),
                            eval_strategy="no", **decided.settings)
    trainer = trl_trainer(SFTTrainer, inputs, policy, config, train_frame, eval_frame, SFT_COLUMNS)
    metrics = fit(trainer, inputs, policy, {"train": len(train_frame), "eval": len(eval_frame)})
    checked = guard.report(inputs, "sft", None, guard.prompts_of(eval_frame, train_frame,
                                                                 limit=inputs.options.get("guard_prompts", 0)))
    return {**metrics, **decided.metrics(), **checked}
