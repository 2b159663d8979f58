"""Direct preference optimisation of the policy on chosen/rejected pairs (TRL's
DPOTrainer), and `logprob_margin`: how much more likely a policy makes the preferred
completion of a pair than the other, the measure of whether preferences were learnt."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from rlhf.train import common, guard
from rlhf.train.common import TrainInputs
from rlhf.errors import TrainingError
from rlhf.train.plumbing import (
    conversational,
    fit,
    has_text,
    load_policy,
    messages,
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
        frame = frame[[has_text(c) and has_text(r) for c, r in zip(frame["chosen"], frame["rejected"])]]
    if len(frame) == 0:
        raise TrainingError("DPO needs at least one preference pair (a chosen and a rejected completion): rank"
                            " comparisons with at least two groups first.")
    frame = conversational(frame, completions=("chosen", "rejected"))
    train_frame, eval_frame = split(inputs, frame)
    decided = common.plan(inputs, "dpo", len(train_frame), common.examples_per_step(inputs.config), "pairs")
    policy = load_policy(inputs, reference=True)
    config = trainer_config(DPOConfig, inputs, eval_strategy="no", **decided.settings)
    trainer = trl_trainer(DPOTrainer, inputs, policy, config, train_frame, eval_frame, DPO_COLUMNS,
                          ref_model=policy.reference)
    metrics = fit(trainer, inputs, policy, {"train": len(train_frame), "eval": len(eval_frame)})
    checked = guard.report(inputs, "dpo", eval_frame, guard.prompts_of(eval_frame, train_frame,
                                                                       limit=inputs.options.get("guard_prompts", 0)))
    return {**metrics, **decided.metrics(), **checked}


# -- measuring what a policy prefers -----------------------------------------------------

def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """Token ids of the chat-templated prompt + completion and where the completion starts,
    tokenised as TRL's preference trainers do."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    return list(full_ids), _common_prefix(list(prompt_ids), list(full_ids))


@torch.no_grad()
def completion_logprobs(model, tokenizer, prompts: list[Any], completions: list[Any], batch_size: int = 8) -> np.ndarray:
    """Summed log-probability of each completion's tokens given its chat-templated prompt.

    `model` is a causal LM or a PEFT model around one (soft-prompt tokens included)."""
    encoded = [_encode(tokenizer, messages(p, "user"), messages(c, "assistant"))
               for p, c in zip(prompts, completions, strict=True)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals: list[float] = []
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            completion = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (ids, begin) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
                completion[row, begin:len(ids)] = True
            input_ids, attention = input_ids.to(device), attention.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, -width:].float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            mask = completion[:, 1:].to(device)
            totals.extend((logps * mask).sum(dim=1).tolist())
    finally:
        model.train(was_training)
    return np.array(totals, dtype=np.float64)


def logprob_margin(model, tokenizer, frame: pd.DataFrame, batch_size: int = 8) -> np.ndarray:
    """Per pair of `frame` (`prompt`, `chosen`, `rejected`): log p(chosen | prompt) -
    log p(rejected | prompt) under `model`, summed over completion tokens. Positive
    where the policy prefers the chosen completion; compare before and after training."""
    prompts = list(frame["prompt"])
    chosen = completion_logprobs(model, tokenizer, prompts, list(frame["chosen"]), batch_size)
    rejected = completion_logprobs(model, tokenizer, prompts, list(frame["rejected"]), batch_size)
    return chosen - rejected
