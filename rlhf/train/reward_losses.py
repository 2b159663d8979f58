"""Pairwise reward-model losses, as small pure functions of reward differences.

Every loss takes ``delta = r_a - r_b``, the reward of the first completion of a pair minus
that of the second, one entry per pair (shape ``(P,)``), and returns the loss of each pair
(shape ``(P,)``, no reduction): the negative log-likelihood of what the annotator said
under the model's outcome probabilities. For a strict pair the first completion is the one
ranked better; for a tied pair the order does not matter (every formula is symmetric).

- Bradley & Terry (1952), "Rank analysis of incomplete block designs: I. The method of
  paired comparisons", Biometrika 39: ``P(a > b) = sigmoid(r_a - r_b)``; no tie outcome,
  so tied pairs are dropped.
- Rao & Kupper (1967), "Ties in paired-comparison experiments: a generalization of the
  Bradley-Terry model", JASA 62: with ``pi = exp(r)`` and ``theta > 1``,
  ``P(a > b) = pi_a / (pi_a + theta pi_b) = sigmoid(delta - log theta)`` and
  ``P(a = b) = (theta^2 - 1) pi_a pi_b / ((pi_a + theta pi_b)(pi_b + theta pi_a))
  = (theta^2 - 1) sigmoid(delta - log theta) sigmoid(-delta - log theta)``.
  theta = 1 gives Bradley-Terry (and ties impossible).
- Davidson (1970), "On extending the Bradley-Terry model to accommodate ties in paired
  comparison experiments", JASA 65: with ``nu > 0``,
  ``P(a > b) = pi_a / (pi_a + pi_b + nu sqrt(pi_a pi_b))`` and
  ``P(a = b) = nu sqrt(pi_a pi_b) / (...)``, i.e. a softmax over the logits
  ``(delta / 2, -delta / 2, log nu)``. nu -> 0 gives Bradley-Terry.

A ``margin`` (Llama 2, Touvron et al. 2023) is subtracted from ``delta`` for strict pairs:
the better completion must beat the worse one by at least the margin to be "right"; tied
pairs take margin 0.

``ranked_pairs`` turns the ranks of one batch element (a pair, or a whole ranking as in
InstructGPT, Ouyang et al. 2022) into the pairs the loss sees.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

LOSSES = ("bradley_terry", "rao_kupper", "davidson")
TIE_AWARE = ("rao_kupper", "davidson")
TIE_PARAMETER_NAME = {"rao_kupper": "theta", "davidson": "nu"}


def _tensor(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def bradley_terry_loss(delta: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``-log sigmoid(delta - margin)`` per strict pair (Bradley & Terry 1952).

    delta, margin: (P,) (margin may be a scalar). Returns (P,)."""
    return -F.logsigmoid(delta - _tensor(margin, delta))


def rao_kupper_log_probabilities(delta: torch.Tensor, theta: torch.Tensor | float
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log P(a > b), log P(a = b), log P(b > a))`` under Rao & Kupper (1967).

    delta: (P,); theta: scalar > 1. Each result (P,)."""
    log_theta = torch.log(_tensor(theta, delta))
    win = F.logsigmoid(delta - log_theta)
    lose = F.logsigmoid(-delta - log_theta)
    tie = torch.log(_tensor(theta, delta) ** 2 - 1) + win + lose
    return win, tie, lose


def davidson_log_probabilities(delta: torch.Tensor, nu: torch.Tensor | float
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log P(a > b), log P(a = b), log P(b > a))`` under Davidson (1970).

    delta: (P,); nu: scalar > 0. Each result (P,)."""
    log_nu = torch.log(_tensor(nu, delta)).expand_as(delta)
    logits = torch.stack([delta / 2, log_nu, -delta / 2], dim=-1)   # (P, 3)
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return log_p[..., 0], log_p[..., 1], log_p[..., 2]


def log_probabilities(loss: str, delta: torch.Tensor, tie_param: torch.Tensor | float | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Win / tie / lose log-probabilities for any loss (Bradley-Terry: log P(tie) = -inf)."""
    if loss == "rao_kupper":
        return rao_kupper_log_probabilities(delta, tie_param)
    if loss == "davidson":
        return davidson_log_probabilities(delta, tie_param)
    if loss == "bradley_terry":
        return F.logsigmoid(delta), torch.full_like(delta, -math.inf), F.logsigmoid(-delta)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")


def rao_kupper_loss(delta: torch.Tensor, tie: torch.Tensor, theta: torch.Tensor | float,
                    margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Negative log-likelihood per pair under Rao & Kupper (1967).

    delta: (P,) r_a - r_b; tie: (P,) bool, True where a and b were tied; theta: scalar > 1
    (a tensor to learn it); margin: (P,) or scalar, used on strict pairs only. Returns (P,)."""
    strict_delta = delta - torch.where(tie, torch.zeros_like(delta), _tensor(margin, delta).expand_as(delta))
    win, tie_log_p, _ = rao_kupper_log_probabilities(strict_delta, theta)
    return -torch.where(tie, tie_log_p, win)


def davidson_loss(delta: torch.Tensor, tie: torch.Tensor, nu: torch.Tensor | float,
                  margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Negative log-likelihood per pair under Davidson (1970).

    delta: (P,) r_a - r_b; tie: (P,) bool; nu: scalar > 0; margin: (P,) or scalar, used on
    strict pairs only. Returns (P,)."""
    strict_delta = delta - torch.where(tie, torch.zeros_like(delta), _tensor(margin, delta).expand_as(delta))
    win, tie_log_p, _ = davidson_log_probabilities(strict_delta, nu)
    return -torch.where(tie, tie_log_p, win)


def pair_loss(loss: str, delta: torch.Tensor, tie: torch.Tensor, tie_param: torch.Tensor | float | None = None,
              margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The per-pair loss `loss` names. Bradley-Terry refuses tied pairs (drop them first)."""
    if loss == "bradley_terry":
        if bool(tie.any()):
            raise ValueError("the Bradley-Terry loss has no tie outcome: drop tied pairs first")
        return bradley_terry_loss(delta, margin)
    if loss == "rao_kupper":
        return rao_kupper_loss(delta, tie, tie_param, margin)
    if loss == "davidson":
        return davidson_loss(delta, tie, tie_param, margin)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")


def predicts_tie(loss: str, delta: torch.Tensor, tie_param: torch.Tensor | float | None) -> torch.Tensor:
    """(P,) bool: True where P(tie) is the largest of the three outcomes.

    Rao-Kupper with theta > 2 and Davidson with nu > 1 predict a tie for small |delta|
    (Davidson: |delta| < 2 log nu); with smaller parameters, or Bradley-Terry, never."""
    win, tie, lose = log_probabilities(loss, delta, tie_param)
    return (tie > win) & (tie > lose)


def ranked_pairs(ranks: list[int], keep_ties: bool) -> list[tuple[int, int, int, bool]]:
    """The pairs of one batch element: ``(first, second, margin, tied)`` with indices into
    `ranks` (dense group positions, 1 = best), the better completion first, margin the rank
    distance (0 for a tie). Tied pairs only when `keep_ties`."""
    pairs = []
    for i, j in itertools.combinations(range(len(ranks)), 2):
        if ranks[i] == ranks[j]:
            if keep_ties:
                pairs.append((i, j, 0, True))
        elif ranks[i] < ranks[j]:
            pairs.append((i, j, ranks[j] - ranks[i], False))
        else:
            pairs.append((j, i, ranks[i] - ranks[j], False))
    return pairs
