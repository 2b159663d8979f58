"""An ensemble of feature-based reward heads fitted on bootstrap resamples, and the choice
of which candidates to show with it (the queue's 'thompson' selection, the bench).

Uncertainty. Each of E heads is `rlhf.train.reward_head.fit_head` (same features, same
losses) on a bootstrap resample of the training pairs (P pairs drawn with replacement
from P) and its own initial weights: the bootstrapped ensemble of Osband et al. (2016,
"Deep Exploration via Bootstrapped DQN") as an approximate posterior over reward
functions. Where the rankings pin a candidate's reward down the heads agree; where they
do not the heads spread, and Thompson sampling (`rlhf.preference.thompson`) explores there.

Candidates and rankings are embedded by the frozen base (`Featurizer`), through the same
feature cache as `rlhf train reward_head` (`features/<version>/<pooling>-<dtype>/`), so a
completion is embedded once whichever of the two asks first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rlhf.modeling import loading
from rlhf.modeling.scoring import encode_conversation
from rlhf.settings import setting
from rlhf.preference.thompson import Candidates, Ranked, double_thompson, random_slots
from rlhf.train.reward import RankedItems, load_classifier
from rlhf.train.reward_head import FeatureCache, HeadConfig, PairTable, cache_dir, distinct_sequences, fit_head, \
    pair_table


@dataclass(frozen=True)
class EnsembleConfig:
    """How the 'thompson' selection fits its ensemble and picks."""

    members: int = setting(8, "reward heads in the ensemble, each fitted on its own bootstrap resample of the pairs")
    min_rankings: int = setting(20, "rankings needed before the ensemble is fitted; fewer: candidates shown at random")
    pooling: str = setting("last", "which hidden state a completion's feature is: last (token) or mean")
    head: HeadConfig = setting(help="the fit of each head (rlhf.train.reward_head.HeadConfig)",
                               factory=lambda: HeadConfig(max_steps=200))


def bootstrap_rows(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) long: `count` row indices drawn uniformly with replacement."""
    return torch.randint(count, (count,), generator=generator)


def fit_ensemble(features: np.ndarray, pairs: PairTable, members: int, config: HeadConfig | None = None,
                 loss: str = "bradley_terry", seed: int = 0) -> torch.Tensor:
    """[members, hidden] head weights on raw features: member e is `fit_head` on bootstrap
    resample e of `pairs` with initial weights seeded `seed + e`. features: [N, hidden];
    pairs index into its rows. Rewards of member e: `features @ weights[e]`."""
    if members < 1:
        raise ValueError(f"An ensemble has at least one member, not {members}.")
    if len(pairs) == 0:
        raise ValueError("An ensemble needs at least one pair to fit.")
    config = config or HeadConfig()
    generator = torch.Generator().manual_seed(int(seed))
    heads = [fit_head(features, pairs.subset(bootstrap_rows(len(pairs), generator)), loss,
                      replace(config, seed=int(seed) + member)).weight
             for member in range(members)]
    return torch.stack(heads)


def member_scores(weights: torch.Tensor, features: np.ndarray) -> np.ndarray:
    """[members, N] rewards of N featurised completions under each member."""
    return (torch.as_tensor(features, dtype=torch.float32) @ weights.T).T.numpy()


class Featurizer:
    """Features of (prompt, completion) pairs under the frozen base at `base_path`, cached
    under `cache_root` (a home's `features/` or any scratch directory)."""

    def __init__(self, base_path: Path, cache_root: Path, pooling: str = "last", batch_size: int = 8):
        self.tokenizer = loading.load_tokenizer(base_path)
        model = load_classifier(base_path, scratch_near=Path(cache_root))
        model.to("cuda" if loading.on_gpu() else "cpu").eval().requires_grad_(False)
        self.backbone = getattr(model, model.base_model_prefix)
        # cache_dir wants a job directory for bases outside a home: the cache root's parent stands in
        self.cache = FeatureCache(cache_dir(base_path, Path(cache_root).parent, pooling))
        self.pooling, self.batch_size = pooling, batch_size

    def encode(self, prompt: Sequence[dict], texts: Sequence[str]) -> list[list[int]]:
        return [encode_conversation(self.tokenizer, prompt, text) for text in texts]

    def features(self, sequences: list[list[int]]) -> np.ndarray:
        """[len(sequences), hidden] float32 features of token sequences."""
        return self.cache.features(self.backbone, sequences, self.tokenizer.pad_token_id, self.pooling,
                                   self.batch_size)[0]


def choose_shown(featurizer: Featurizer, ranked: list[Ranked], candidates: list[Candidates], k: int,
                 config: EnsembleConfig | None = None, seed: int = 0) -> tuple[list[list[int]], bool]:
    """For each prompt's candidates, the K indices to show, and whether the ensemble chose
    them (False: too few rankings or no strict pair yet, so K at random)."""
    config = config or EnsembleConfig()
    rng = np.random.default_rng(seed)
    if len(ranked) < config.min_rankings:  # nothing to fit: no need to tokenise the rankings
        return [random_slots(len(c.texts), k, rng) for c in candidates], False
    items = [RankedItems(n, r.prompt, r.texts, featurizer.encode(r.prompt, r.texts), r.ranks)
             for n, r in enumerate(ranked)]
    sequences, positions = distinct_sequences(items)
    pairs = pair_table(items, positions, keep_ties=False, usable=set(range(len(sequences))))
    if len(pairs) == 0:
        return [random_slots(len(c.texts), k, rng) for c in candidates], False
    weights = fit_ensemble(featurizer.features(sequences), pairs, config.members, config.head, seed=seed)
    chosen = []
    for group in candidates:
        scores = member_scores(weights, featurizer.features(featurizer.encode(group.prompt, group.texts)))
        chosen.append(double_thompson(scores, k, rng))
    return chosen, True
