"""Log-probabilities of completions under a model: of sampled ones (`sequence_logprobs`, for
the KL of an evaluation) and of given ones after their chat-templated prompt
(`completion_logprobs`, what a policy prefers before and after DPO; `policy_logprobs` for a
loaded policy, a prompt version's system prompt and template in each prompt through
`hard_prompt.conversation`), and the perplexity of raw text cut into chunks (`perplexity`,
continued pretraining's report), one computation."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from rlhf.modeling.hard_prompt import conversation
from rlhf.preference.messages import as_messages

if TYPE_CHECKING:  # torch is imported by the functions that need it
    import torch

    from rlhf.modeling.generate import Generated
    from rlhf.modeling.models import Policy


def sequence_logprobs(model, generated: "Generated", temperature: float = 1.0, batch_size: int = 8) -> "torch.Tensor":
    """Sum of log-probabilities of each row's response tokens under `model`: ``[b]``.

    `generated` holds left-padded prompts and responses (:func:`rlhf.modeling.generate.generate_tokens`);
    only the tokens of `response_mask` count. Position ids follow the attention mask as in
    `generate`, so left padding changes nothing; logits are divided by `temperature`. A
    prompt-learning (PEFT soft prompt or prefix) model ignores position ids, so its rows are
    batched only with rows of as much left padding, which is cut off: each row is read at
    the positions it has alone. Its virtual tokens come first: only the last positions are read.
    """
    import torch

    prompt_ids, response_ids = generated.prompt_ids, generated.response_ids
    length = response_ids.shape[1]
    if length == 0:
        return torch.zeros(response_ids.shape[0])
    device = next(model.parameters()).device
    prompt_learning = bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))
    sums = torch.zeros(response_ids.shape[0])
    with torch.inference_mode():
        for rows, padding in _batches(generated.prompt_mask, batch_size, by_padding=prompt_learning):
            input_ids = torch.cat([prompt_ids[rows, padding:], response_ids[rows]], dim=1).to(device)
            mask = torch.cat([generated.prompt_mask[rows, padding:], generated.response_mask[rows]], dim=1).to(device)
            extra: dict[str, Any] = {}
            if not prompt_learning:  # PEFT ignores position ids (with a warning) for soft prompts
                extra["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=length + 1,
                           **extra).logits[:, -(length + 1):-1]
            log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
            tokens = response_ids[rows].to(device)
            picked = torch.gather(log_probs, 2, tokens.unsqueeze(-1)).squeeze(-1)
            sums[rows] = (picked * generated.response_mask[rows].to(device)).sum(dim=1).cpu()
    return sums


def _batches(prompt_mask: "torch.Tensor", batch_size: int, by_padding: bool) -> list[tuple["torch.Tensor", int]]:
    """(row indices, left-padding columns to cut) of each batch: rows in order, none cut; or,
    `by_padding`, rows of the same left padding together, that padding cut.

    prompt_mask: [b, T], 1 on prompt tokens (right-aligned)"""
    import torch

    if not by_padding:
        return [(torch.arange(start, min(start + batch_size, len(prompt_mask))), 0)
                for start in range(0, len(prompt_mask), batch_size)]
    padding = (prompt_mask == 0).sum(dim=1)
    batches = []
    for amount in padding.unique().tolist():
        rows = torch.nonzero(padding == amount).flatten()
        batches += [(rows[start:start + batch_size], int(amount)) for start in range(0, len(rows), batch_size)]
    return batches


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_completion(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """Token ids of the chat-templated prompt + completion and where the completion starts,
    tokenised as TRL's preference trainers do."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    return list(full_ids), _common_prefix(list(prompt_ids), list(full_ids))


def completion_logprobs(model, tokenizer, prompts: list[Any], completions: list[Any], batch_size: int = 8,
                        system_prompt: str | None = None, template: str | None = None) -> np.ndarray:
    """Summed log-probability of each completion's tokens given its chat-templated prompt.

    `model` is a causal LM or a PEFT model around one (soft-prompt tokens included). Each
    prompt is the conversation `hard_prompt.conversation` makes of it with `system_prompt`
    and `template` (a prompt version's; none: the prompt as given). The prompts are
    left-padded and the completions right-padded into a `Generated`, so that
    `sequence_logprobs` measures them as it measures samples."""
    encoded = [encode_completion(tokenizer, conversation(system_prompt, as_messages(p, "user"), template),
                                 as_messages(c, "assistant"))
               for p, c in zip(prompts, completions, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return _token_logprobs(model, [ids[:begin] for ids, begin in encoded], [ids[begin:] for ids, begin in encoded],
                           pad, batch_size).numpy().astype(np.float64)


def perplexity(model, chunks: list[list[int]], pad_id: int, batch_size: int = 8) -> tuple[float, int]:
    """Perplexity of token chunks (a corpus cut to length) under `model`, and the tokens it
    is taken over: exp of the mean negative log-likelihood per predicted token, every token
    of a chunk after its first (which has no context), all chunks' tokens weighted alike.
    Measured by `sequence_logprobs`, the chunk's first token as its prompt."""
    chunks = [list(chunk) for chunk in chunks if len(chunk) >= 2]
    if not chunks:
        raise ValueError("perplexity needs a chunk of at least two tokens")
    sums = _token_logprobs(model, [chunk[:1] for chunk in chunks], [chunk[1:] for chunk in chunks], pad_id, batch_size)
    tokens = sum(len(chunk) - 1 for chunk in chunks)
    return math.exp(-float(sums.double().sum()) / tokens), tokens


def _token_logprobs(model, prompts: list[list[int]], responses: list[list[int]], pad: int,
                    batch_size: int) -> "torch.Tensor":
    """`sequence_logprobs` of token-id responses after token-id prompts: the prompts
    left-padded, the responses right-padded into a `Generated`, the model in eval mode."""
    import torch

    from rlhf.modeling.generate import Generated

    rows = len(prompts)
    prompt_width = max(len(ids) for ids in prompts)
    response_width = max(len(ids) for ids in responses)
    prompt_ids = torch.full((rows, prompt_width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((rows, prompt_width), dtype=torch.long)
    response_ids = torch.full((rows, response_width), pad, dtype=torch.long)
    response_mask = torch.zeros((rows, response_width), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if prompt:
            prompt_ids[row, prompt_width - len(prompt):] = torch.tensor(prompt)
            prompt_mask[row, prompt_width - len(prompt):] = 1
        response_ids[row, :len(response)] = torch.tensor(response, dtype=torch.long)
        response_mask[row, :len(response)] = 1
    generated = Generated(prompt_ids, prompt_mask, response_ids, response_mask, torch.zeros(rows, dtype=torch.bool))
    was_training = model.training
    model.eval()
    try:
        return sequence_logprobs(model, generated, batch_size=batch_size)
    finally:
        model.train(was_training)


def policy_logprobs(policy: "Policy", prompts: list[Any], completions: list[Any], batch_size: int = 8) -> np.ndarray:
    """`completion_logprobs` under a loaded policy, as it is given each prompt: a prompt
    version's system prompt and template included."""
    return completion_logprobs(policy.model, policy.tokenizer, prompts, completions, batch_size,
                               system_prompt=policy.system_prompt, template=policy.template)
