"""Log-probabilities of completions under a model: of sampled ones (`sequence_logprobs`, for
the KL of an evaluation) and of given ones after their chat-templated prompt
(`completion_logprobs`, what a policy prefers before and after DPO; `policy_logprobs` for a
loaded policy, a prompt version's system prompt and template in each prompt through
`hard_prompt.conversation`), one computation."""

from __future__ import annotations

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
    prompt-tuned (PEFT) model prepends its virtual tokens: only the last positions are read.
    """
    import torch

    prompt_ids, response_ids = generated.prompt_ids, generated.response_ids
    length = response_ids.shape[1]
    if length == 0:
        return torch.zeros(response_ids.shape[0])
    device = next(model.parameters()).device
    prompt_learning = bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))
    sums = []
    with torch.inference_mode():
        for start in range(0, response_ids.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            input_ids = torch.cat([prompt_ids[rows], response_ids[rows]], dim=1).to(device)
            mask = torch.cat([generated.prompt_mask[rows], generated.response_mask[rows]], dim=1).to(device)
            extra: dict[str, Any] = {}
            if not prompt_learning:  # PEFT ignores position ids (with a warning) for soft prompts
                extra["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=length + 1,
                           **extra).logits[:, -(length + 1):-1]
            log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
            tokens = response_ids[rows].to(device)
            picked = torch.gather(log_probs, 2, tokens.unsqueeze(-1)).squeeze(-1)
            sums.append((picked * generated.response_mask[rows].to(device)).sum(dim=1).cpu())
    return torch.cat(sums)


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
    import torch

    from rlhf.modeling.generate import Generated

    encoded = [encode_completion(tokenizer, conversation(system_prompt, as_messages(p, "user"), template),
                                 as_messages(c, "assistant"))
               for p, c in zip(prompts, completions, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_width = max(begin for _, begin in encoded)
    response_width = max(len(ids) - begin for ids, begin in encoded)
    rows = len(encoded)
    prompt_ids = torch.full((rows, prompt_width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((rows, prompt_width), dtype=torch.long)
    response_ids = torch.full((rows, response_width), pad, dtype=torch.long)
    response_mask = torch.zeros((rows, response_width), dtype=torch.long)
    for row, (ids, begin) in enumerate(encoded):
        prompt_ids[row, prompt_width - begin:] = torch.tensor(ids[:begin])
        prompt_mask[row, prompt_width - begin:] = 1
        response_ids[row, :len(ids) - begin] = torch.tensor(ids[begin:])
        response_mask[row, :len(ids) - begin] = 1
    generated = Generated(prompt_ids, prompt_mask, response_ids, response_mask, torch.zeros(rows, dtype=torch.bool))
    was_training = model.training
    model.eval()
    try:
        return sequence_logprobs(model, generated, batch_size=batch_size).numpy().astype(np.float64)
    finally:
        model.train(was_training)


def policy_logprobs(policy: "Policy", prompts: list[Any], completions: list[Any], batch_size: int = 8) -> np.ndarray:
    """`completion_logprobs` under a loaded policy, as it is given each prompt: a prompt
    version's system prompt and template included."""
    return completion_logprobs(policy.model, policy.tokenizer, prompts, completions, batch_size,
                               system_prompt=policy.system_prompt, template=policy.template)
