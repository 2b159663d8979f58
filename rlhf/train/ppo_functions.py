"""The arithmetic of PPO for language models, as small pure functions on tensors.

Each function says the shapes it takes and returns and where its formula comes from.
Notation: b = batch (rollouts), T = response length in tokens (padded), V = vocabulary.
A `mask` is [b, T] with 1 (or True) on the real tokens of each response, up to and
including its EOS, and 0 on the padding after it; masked positions never count.

References:
  [Schulman 2015]  Schulman et al., "High-Dimensional Continuous Control Using Generalized
                   Advantage Estimation", arXiv:1506.02438.
  [Schulman 2017]  Schulman et al., "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
  [Ziegler 2019]   Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
                   arXiv:1909.08593 (per-token KL penalty, adaptive KL coefficient).
  [Huang 2022]     Huang et al., "The 37 Implementation Details of Proximal Policy Optimization",
                   ICLR blog track 2022 (value clipping, advantage whitening).
  [Huang 2024]     Huang et al., "The N+ Implementation Details of RLHF with PPO: A Case Study
                   on TL;DR Summarization", arXiv:2403.17031.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is set.

    values: [...] any shape; mask: same shape (bool or 0/1).
    Returns a scalar, or the mean along `dim`. An empty mask gives 0, not NaN."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where `mask` is set (scalar), with Bessel's correction when
    `unbiased` and more than one value is masked in."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise `values` to unit variance over the masked positions [Huang 2022, "advantage normalization"].

    values, mask: [b, T]. Returns [b, T]: (x - mean) / sqrt(var + 1e-8), with the mean
    added back when `shift_mean` is False (scale only, as TRL's `whiten`: used for rewards,
    whose sign matters). Masked-out positions are 0."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token under its logits.

    logits: [b, T, V] (already divided by the sampling temperature, so that they are the
    distribution the tokens were sampled from [Huang 2024, "dividing logits by temperature"]); tokens: [b, T] long. Returns [b, T]: log softmax(logits)[tokens]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 is too coarse for ratios
    return torch.gather(F.log_softmax(logits, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each token's distribution. logits: [b, T, V]. Returns [b, T]:
    logsumexp(z) - sum softmax(z) * z."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(dim=-1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token. mask: [b, T] (a response mask: ones, then
    zeros). Returns [b] long; a row with no real token gives -1."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """The score of a response cut off by the length budget becomes `penalty` [Huang 2024,
    the "EOS trick": responses without an EOS token get a -1 reward].

    scores: [b]; has_eos: [b] bool. Returns [b]. `penalty` None leaves scores as they are."""
    if penalty is None:
        return scores
    return torch.where(has_eos, scores, torch.full_like(scores, float(penalty)))


def kl_penalty_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kl_coef: float,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: a KL penalty at every real token, the score added at the last.

    r_t = -kl_coef * (log pi(y_t) - log pi_ref(y_t)) + [t = last real token] * score
    [Ziegler 2019, eq. 2; Huang 2024: the reward model's score is read, and credited,
    at the last real token (the EOS); padding gets neither penalty nor score].

    scores: [b]; logprobs, ref_logprobs: [b, T] of the sampled tokens; response_mask: [b, T].
    Returns (rewards [b, T], kl [b, T]) with kl = logprobs - ref_logprobs (the k1 estimator),
    both 0 outside the mask."""
    mask = response_mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = last_token_index(response_mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    has_token = last >= 0
    rewards[rows[has_token], last[has_token]] += scores[has_token].to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation [Schulman 2015, eq. 16].

    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},
    with V and A zero past the last real token (the episode ends with the response).

    rewards, values: [b, T]; mask: [b, T]. Returns (advantages [b, T], returns [b, T]) with
    returns = advantages + values (the value targets), both 0 outside the mask."""
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    length = rewards.shape[1]
    advantage = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * advantage) * mask[:, t]
        advantages[:, t] = advantage
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clipped surrogate objective, as a loss [Schulman 2017, eq. 7].

    ratio = exp(logprobs - old_logprobs)
    loss  = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))
    Where the clipped term wins the gradient is zero: the update stops at the trust region.

    logprobs: [b, T] (with grad), old_logprobs: [b, T] (rollout time), advantages: [b, T],
    mask: [b, T]. Returns scalars (loss, clipfrac = share of tokens where the clipped term
    won, approx_kl = mean 0.5 * (logprobs - old_logprobs)^2, as TRL reports it)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask)
    return loss, clipfrac.detach(), approx_kl


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped value loss [Huang 2022, "value function loss clipping"; OpenAI baselines ppo2].

    V_clip = old_V + clip(V - old_V, -eps, eps)
    loss   = 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)

    values: [b, T] (with grad), old_values: [b, T] (rollout time), returns: [b, T], mask:
    [b, T]. Returns scalars (loss, clipfrac = share of tokens where the clipped error won)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clipfrac.detach()


class FixedKLController:
    """A constant KL coefficient (same interface as `AdaptiveKLController`)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """The KL coefficient steered towards a target KL [Ziegler 2019, section 2.2]:

    e_t = clip(KL_t / KL_target - 1, -0.2, 0.2),   beta_{t+1} = beta_t * (1 + e_t * n_steps / horizon)

    `current_kl` is the mean over rollouts of the summed per-token KL of a response,
    `n_steps` the rollouts it was measured on."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError("The adaptive KL controller needs a positive target and horizon.")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value
