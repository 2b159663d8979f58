"""Direct preference optimisation of the policy on chosen/rejected pairs (TRL's
DPOTrainer), and `logprob_margin`: how much more likely a policy makes the preferred
completion of a pair than the other, the measure of whether preferences were learnt."""

from __future__ import annotations


import numpy as np
import pandas as pd

from rlhf.train import common, guard
from rlhf.train.common import TrainInputs
from rlhf.errors import TrainingError
from rlhf.modeling.logprobs import completion_logprobs
from rlhf.train.plumbing import (
    MicroBatch,
    conversational,
    fit,
    is_preference,
    load_trl_policy,
    trl_trainer,
    require_columns,
    split,
    trainer_config,
)

DPO_COLUMNS = ["prompt", "chosen", "rejected"]


def train(inputs: TrainInputs) -> dict[str, float]:
    """DPO on `prompt`, `chosen`, `rejected` rows (LoRA by default: the reference is the
    policy with its adapter switched off). Returns train loss, held-out
    `eval/rewards/margins`, `eval/rewards/accuracies`, ... and example counts."""
    from trl import DPOConfig, DPOTrainer

    frame = inputs.data
    require_columns(frame, DPO_COLUMNS, "DPO")
    if len(frame):
        frame = frame[[is_preference(c, r) for c, r in zip(frame["chosen"], frame["rejected"])]]
    if len(frame) == 0:
        raise TrainingError("DPO needs at least one preference pair (a chosen and a rejected completion): rank"
                            " comparisons with at least two groups first.")
    frame = conversational(frame, completions=("chosen", "rejected"))
    train_frame, eval_frame = split(inputs, frame)
    decided = common.plan(inputs, "dpo", len(train_frame), common.examples_per_step(inputs.config), "pairs")
    policy = load_trl_policy(inputs, reference=True)
    config = trainer_config(DPOConfig, inputs, MicroBatch.of(policy, train_frame, ("chosen", "rejected")),
                            eval_strategy="no", **decided.settings)
    trainer = trl_trainer(DPOTrainer, inputs, policy, config, train_frame, eval_frame, DPO_COLUMNS,
                          ref_model=policy.reference)
    metrics = fit(trainer, inputs, policy, {"train": len(train_frame), "eval": len(eval_frame)})
    checked = guard.report(inputs, "dpo", eval_frame, guard.prompts_of(eval_frame, train_frame,
                                                                       limit=inputs.options.get("guard_prompts", 0)))
    return {**metrics, **decided.metrics(), **checked}


# -- measuring what a policy prefers -----------------------------------------------------

def logprob_margin(model, tokenizer, frame: pd.DataFrame, batch_size: int = 8) -> np.ndarray:
    """Per pair of `frame` (`prompt`, `chosen`, `rejected`): log p(chosen | prompt) -
    log p(rejected | prompt) under `model`, summed over completion tokens. Positive
    where the policy prefers the chosen completion; compare before and after training."""
    prompts = list(frame["prompt"])
    chosen = completion_logprobs(model, tokenizer, prompts, list(frame["chosen"]), batch_size)
    rejected = completion_logprobs(model, tokenizer, prompts, list(frame["rejected"]), batch_size)
    return chosen - rejected
