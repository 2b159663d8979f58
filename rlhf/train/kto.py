"""KTO on single completions marked desirable (top group, a good mark) or undesirable
(bottom group, a bad mark), with TRL's KTOTrainer."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from rlhf.train import common, guard
from rlhf.train.common import TrainInputs
from rlhf.errors import TrainingError
from rlhf.train.plumbing import (
    MicroBatch,
    conversational,
    fit,
    answer_of,
    load_trl_policy,
    trl_trainer,
    require_columns,
    split,
    trainer_config,
)

log = logging.getLogger(__name__)

KTO_COLUMNS = ["prompt", "completion", "label"]


def _counts(frame) -> tuple[int, int]:
    desirable = int(frame["label"].astype(bool).sum())
    return desirable, len(frame) - desirable


def class_weights(desirable: int, undesirable: int) -> dict[str, float]:
    """Loss weights that balance unequal numbers of desirable and undesirable examples,
    as the KTO paper advises (lambda_D n_D / lambda_U n_U between 1 and 4/3): the rarer
    side is weighted up, the other keeps weight 1."""
    if desirable >= undesirable:
        return {"desirable_weight": 1.0, "undesirable_weight": round(desirable / undesirable, 3)}
    return {"desirable_weight": round(undesirable / desirable, 3), "undesirable_weight": 1.0}


def train(inputs: TrainInputs) -> dict[str, float]:
    """KTO on `prompt`, `completion`, `label` rows (True: desirable). Both kinds are
    needed. Unless the job sets desirable_weight or undesirable_weight, the rarer kind
    is weighted up. Returns train loss, held-out `eval/rewards/margins`, `eval/kl`, ...
    and the counts of each kind."""
    from trl import KTOConfig, KTOTrainer

    frame = inputs.data
    require_columns(frame, KTO_COLUMNS, "KTO")
    if len(frame):
        frame = frame[[answer_of(c) is not None and bool(pd.notna(label))
                       for c, label in zip(frame["completion"], frame["label"])]]
    desirable, undesirable = _counts(frame) if len(frame) else (0, 0)
    if desirable == 0 or undesirable == 0:
        raise TrainingError(f"KTO needs both desirable and undesirable completions; the data has {desirable}"
                            f" desirable and {undesirable} undesirable.")
    frame = conversational(frame, completions=("completion",))
    frame["label"] = frame["label"].astype(bool)
    train_frame, eval_frame = split(inputs, frame)
    if min(_counts(train_frame)) == 0:
        log.warning("The held-out split left one kind of example out of training; training on everything.")
        train_frame, eval_frame = frame, frame.iloc[0:0]
    # KTOTrainer reads the data in order (its KL estimate pairs neighbours in a batch): shuffle it once here
    seed = int(inputs.config.get("seed", 0) or 0)
    order = np.random.default_rng(seed).permutation(len(train_frame))
    train_frame = train_frame.iloc[order].reset_index(drop=True)
    n_desirable, n_undesirable = _counts(train_frame)
    weights = {} if {"desirable_weight", "undesirable_weight"} & set(inputs.config) else \
        class_weights(n_desirable, n_undesirable)
    batch = int(inputs.config.get("per_device_train_batch_size", 8))
    if batch < 2:
        raise TrainingError("KTO needs per_device_train_batch_size of at least 2 (its KL estimate pairs examples"
                            " within a batch).")
    if len(train_frame) < 2:
        raise TrainingError("KTO needs at least two training examples.")
    decided = common.plan(inputs, "kto", len(train_frame), common.examples_per_step(inputs.config),
                          "labelled completions")
    policy = load_trl_policy(inputs, reference=True)
    # each example is its completion and, for the KL estimate, another prompt's completion
    config = trainer_config(KTOConfig, inputs, MicroBatch.of(policy, train_frame, ("completion",), sequences=2),
                            eval_strategy="no", **weights, **decided.settings)
    trainer = trl_trainer(KTOTrainer, inputs, policy, config, train_frame, eval_frame, KTO_COLUMNS,
                          ref_model=policy.reference)
    metrics = fit(trainer, inputs, policy, {"train": len(train_frame), "eval": len(eval_frame)})
    metrics.update({"train/desirable": float(n_desirable), "train/undesirable": float(n_undesirable),
                    **{f"train/{k}": float(v) for k, v in weights.items()}, **decided.metrics()})
    prompts = guard.prompts_of(eval_frame, train_frame, limit=inputs.options.get("guard_prompts", 0))
    metrics.update(guard.report(inputs, "kto", guard.kto_pairs(eval_frame), prompts))
    return metrics
