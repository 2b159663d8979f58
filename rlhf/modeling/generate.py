"""Sampling K completions for a batch of prompts in one `generate` call.

Prompts are rendered with the tokenizer's chat template and left-padded, so one
forward pass serves every prompt of a batch and all K samples of each
(`num_return_sequences=K`). Temperature and top-p are `rlhf.modeling.nucleus`'s (transformers'
nucleus, found without sorting the vocabulary); a seed makes a call reproducible (it
seeds torch, as `transformers.set_seed` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList

from rlhf.modeling.hard_prompt import conversation
from rlhf.modeling.models import Policy
from rlhf.modeling.nucleus import NucleusWarper
from rlhf.modeling.sampling import MAX_K, SamplingParams


@dataclass(frozen=True)
class Sample:
    text: str
    num_tokens: int  # generated tokens up to and including EOS
    finish_reason: str  # 'eos' or 'length'
    # the weights' dtype it was sampled in ('bfloat16', 'float32'), recorded with the
    # completion's sampling; not part of equality: the same text is the same sample
    dtype: str | None = field(default=None, compare=False)


def render_prompts(policy: Policy, conversations: list[list[dict]]) -> list[str]:
    """The chat-templated prompts, a prompt version's system prompt and template in each
    (`hard_prompt.conversation`)."""
    return [
        policy.tokenizer.apply_chat_template(conversation(policy.system_prompt, messages, policy.template),
                                             tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]


@dataclass(frozen=True)
class Generated:
    """Token ids of one batch of generations (b = conversations x k rows).

    prompt_ids:    [b, P] the chat-templated prompts, left-padded with the pad token
    prompt_mask:   [b, P] 1 on prompt tokens, 0 on left padding
    response_ids:  [b, R] what `generate` returned after the prompt (R <= max_new_tokens);
                   after a row's first EOS come pad tokens
    response_mask: [b, R] 1 on the response's tokens up to and including its first EOS
    has_eos:       [b] True where the response ended with an EOS (not cut by the budget)
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor


@torch.no_grad()
def generate_tokens(policy: Policy, conversations: list[list[dict]], params: SamplingParams, k: int = 1) -> Generated:
    """One `generate` call for `conversations` (k samples each, rows i*k .. i*k+k-1 for
    conversation i), as token ids. Does not seed: the caller does (see `sample`).

    Sampling is temperature, then top-p, no top-k (`rlhf.modeling.nucleus.NucleusWarper`: the
    nucleus transformers' top-p keeps, found without a full sort), then transformers'
    own draw; temperature 0 is greedy (decoded once, repeated k times)."""
    tokenizer = policy.tokenizer
    tokenizer.padding_side = "left"
    eos_ids = _eos_ids(policy)
    greedy = params.temperature <= 0
    inputs = prompt_inputs(policy, conversations)
    output = policy.model.generate(
        **inputs,
        do_sample=not greedy,
        # generate's own warpers off (neutral values, not None, which would let a model's
        # generation_config bring its own): NucleusWarper does temperature and top-p
        temperature=None if greedy else 1.0,
        top_p=None if greedy else 1.0,
        top_k=None if greedy else 0,
        logits_processor=None if greedy else LogitsProcessorList([NucleusWarper(params.temperature, params.top_p)]),
        num_return_sequences=1 if greedy else k,
        max_new_tokens=params.max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    if greedy:  # K identical answers: decode once, repeat
        output = output.repeat_interleave(k, dim=0)
    prompt_length = inputs["input_ids"].shape[1]
    prompt_ids = output[:, :prompt_length]
    prompt_mask = inputs["attention_mask"].repeat_interleave(k, dim=0)
    response_ids = output[:, prompt_length:]
    response_mask, has_eos = mask_through_first_eos(response_ids, eos_ids)
    return Generated(prompt_ids, prompt_mask, response_ids, response_mask, has_eos)


def prompt_inputs(policy: Policy, conversations: list[list[dict]]):
    """The rendered prompts tokenised and left-padded on the model's device: input_ids and
    attention_mask, each [conversations, P]."""
    policy.tokenizer.padding_side = "left"
    texts = render_prompts(policy, conversations)
    return policy.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(policy.model.device)


def reprompted(policy: Policy, conversations: list[list[dict]], generated: Generated, k: int = 1) -> Generated:
    """`generated`'s responses after the prompts as `policy` renders them (another policy's
    system prompt: `hard_prompt.conversation`), to measure them under `policy`: the KL of a
    prompt version from its reference is of its answers given the prompt without its system
    prompt. The responses and their masks are unchanged."""
    inputs = prompt_inputs(policy, conversations)
    device = generated.response_ids.device
    return Generated(inputs["input_ids"].repeat_interleave(k, dim=0).to(device),
                     inputs["attention_mask"].repeat_interleave(k, dim=0).to(device),
                     generated.response_ids, generated.response_mask, generated.has_eos)


def mask_through_first_eos(response_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[b, R] ids -> ([b, R] long mask, 1 up to and including the first EOS of each row,
    [b] bool: the row has an EOS). A row without EOS is all ones."""
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()  # EOS strictly before position t
    return (eos_before == 0).long(), is_eos.any(dim=1)


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
    if not 1 <= k <= MAX_K:  # one sample is a source's share of a mixed comparison, or an evaluation's
        raise ValueError(f"K must be between 1 and {MAX_K}, not {k}.")
    eos_ids = _eos_ids(policy)
    dtype = str(policy.model.dtype).removeprefix("torch.")
    if params.seed is not None:
        torch.manual_seed(params.seed)
    results: list[list[Sample]] = []
    for start in range(0, len(conversations), batch_prompts):
        generated = generate_tokens(policy, conversations[start : start + batch_prompts], params, k)
        samples = [to_sample(policy.tokenizer, row, eos_ids, dtype) for row in generated.response_ids]
        results.extend(samples[i : i + k] for i in range(0, len(samples), k))
    return results


def _eos_ids(policy: Policy) -> list[int]:
    configured = policy.model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    return ids or [policy.tokenizer.eos_token_id]


def to_sample(tokenizer, row: torch.Tensor, eos_ids: list[int], dtype: str | None = None) -> Sample:
    is_eos = torch.isin(row, torch.tensor(eos_ids, device=row.device))
    if is_eos.any():
        end = int(is_eos.nonzero()[0]) + 1
        return Sample(tokenizer.decode(row[: end - 1], skip_special_tokens=True).strip(), end, "eos", dtype)
    return Sample(tokenizer.decode(row, skip_special_tokens=True).strip(), len(row), "length", dtype)
