"""Sampling K completions for a batch of prompts in one `generate` call.

Prompts are rendered with the tokenizer's chat template and left-padded, so one
forward pass serves every prompt of a batch and all K samples of each
(`num_return_sequences=K`). Temperature and top-p are transformers' own; a seed makes a
call reproducible (it seeds torch, as `transformers.set_seed` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.models import Policy
from rlhf.sampling import MAX_K, MIN_K, SamplingParams


@dataclass(frozen=True)
class Sample:
    text: str
    num_tokens: int  # generated tokens up to and including EOS
    finish_reason: str  # 'eos' or 'length'


def render_prompts(policy: Policy, conversations: list[list[dict]]) -> list[str]:
    return [
        policy.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]


@torch.inference_mode()
def sample(
    policy: Policy,
    conversations: list[list[dict]],
    k: int = 4,
    params: SamplingParams = SamplingParams(),
    batch_prompts: int = 8,
) -> list[list[Sample]]:
    """K samples for each conversation: result[i][j] is sample j of conversation i.

    With a seed the result is reproducible for the same inputs and batch size.
    Conversations are processed `batch_prompts` at a time (batch rows = batch_prompts * k).
    """
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"K must be between {MIN_K} and {MAX_K}, not {k}.")
    tokenizer = policy.tokenizer
    tokenizer.padding_side = "left"
    eos_ids = _eos_ids(policy)
    greedy = params.temperature <= 0
    if params.seed is not None:
        torch.manual_seed(params.seed)
    results: list[list[Sample]] = []
    for start in range(0, len(conversations), batch_prompts):
        texts = render_prompts(policy, conversations[start : start + batch_prompts])
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(policy.model.device)
        output = policy.model.generate(
            **inputs,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None,
            num_return_sequences=1 if greedy else k,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        if greedy:  # K identical answers: decode once, repeat
            output = output.repeat_interleave(k, dim=0)
        generated = output[:, inputs["input_ids"].shape[1] :]
        samples = [to_sample(tokenizer, row, eos_ids) for row in generated]
        results.extend(samples[i : i + k] for i in range(0, len(samples), k))
    return results


def _eos_ids(policy: Policy) -> list[int]:
    configured = policy.model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    return ids or [policy.tokenizer.eos_token_id]


def to_sample(tokenizer, row: torch.Tensor, eos_ids: list[int]) -> Sample:
    is_eos = torch.isin(row, torch.tensor(eos_ids, device=row.device))
    if is_eos.any():
        end = int(is_eos.nonzero()[0]) + 1
        return Sample(tokenizer.decode(row[: end - 1], skip_special_tokens=True).strip(), end, "eos")
    return Sample(tokenizer.decode(row, skip_special_tokens=True).strip(), len(row), "length")
