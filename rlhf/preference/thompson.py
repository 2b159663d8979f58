"""Which K of M candidate completions to show: double Thompson sampling over an ensemble.

Dwaracherla, Asghari, Hao and Van Roy (2024), "Efficient Exploration for LLMs" (ICML 2024,
arXiv:2402.00396), choose the two responses of each query by double Thompson sampling
(Wu and Liu 2016, "Double Thompson Sampling for Dueling Bandits") with the reward model's
uncertainty represented by an epistemic neural network: draw one plausible reward
function, show the response it rates best; draw again, and again, until a draw rates a
different response best, and show that one too. Each shown response is a candidate for
the best one under some plausible reward, so the annotator is asked about what is both
promising and uncertain.

The variant here (`double_thompson`):

- the plausible reward functions are the E members of an ensemble (a bootstrap ensemble
  of reward heads, `rlhf.train.head_ensemble`), each drawn uniformly at random: the
  ensemble stands in for the paper's epistemic neural network, as its baselines do;
- it fills K slots, not only two: slot 1 is the argmax under one drawn member; every
  further slot redraws a member until its argmax is a candidate not shown yet, at most
  `max_draws` times (the paper's loop has no stated bound; an ensemble that agrees would
  loop for ever), after which the slot takes the best candidate not shown yet under the
  last member drawn. With K = 2 and a bound never reached this is the paper's pair.

Pure numpy: scores in, candidate indices out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass(frozen=True)
class Ranked:
    """One ranking as the selection reads it: the prompt, the completions shown, their dense ranks."""

    prompt: list[dict]
    texts: list[str]
    ranks: list[int]


@dataclass(frozen=True)
class Candidates:
    """The M candidate completions of one prompt."""

    prompt: list[dict]
    texts: list[str]


MAX_DRAWS = 30  # redraws per slot before the slot takes the last draw's best unshown candidate


def double_thompson(scores: np.ndarray, k: int, rng: np.random.Generator, max_draws: int = MAX_DRAWS) -> list[int]:
    """K distinct candidate indices chosen by double Thompson sampling, in the order picked.

    scores: [E, M], member e's reward for candidate m (E >= 1 members, M >= K candidates).
    rng: the draws of members (a seeded `np.random.default_rng(seed)` gives the same picks).
    Ties within one member's scores go to the lowest index (`np.argmax`)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be [members, candidates] with at least one member, not {scores.shape}.")
    members, candidates = scores.shape
    if not 1 <= k <= candidates:
        raise ValueError(f"Cannot pick {k} of {candidates} candidates.")
    if max_draws < 1:
        raise ValueError(f"max_draws must be at least 1, not {max_draws}.")
    chosen: list[int] = []
    while len(chosen) < k:
        for _ in range(max_draws):
            member = scores[int(rng.integers(members))]
            best = int(np.argmax(member))
            if best not in chosen:
                break
        else:
            unshown = np.setdiff1d(np.arange(candidates), chosen)
            best = int(unshown[np.argmax(member[unshown])])
        chosen.append(best)
    return chosen


def random_slots(candidates: int, k: int, rng: np.random.Generator) -> list[int]:
    """K distinct candidate indices uniformly at random: passive selection, the baseline and
    the fallback while there are too few rankings to fit an ensemble."""
    if not 1 <= k <= candidates:
        raise ValueError(f"Cannot pick {k} of {candidates} candidates.")
    return [int(i) for i in rng.choice(candidates, size=k, replace=False)]
