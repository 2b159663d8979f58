"""Log-probabilities of sampled completions under a model, for the KL of an evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the functions that need it
    import torch

    from rlhf.modeling.generate import Generated


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
