"""Simulated annotators: rankings without a person, for demos, tests and RLAIF.

An annotator has a ``name`` and ``rank(prompt, completions) -> str``: given the prompt (chat
messages, or text for one user turn) and K completions shown as A, B, ..., it returns a
canonical ranking such as ``"C > A = B"`` (see :mod:`rlhf.preference.ranking`).

This module holds what every annotator shares: the base (:class:`Annotator`: the noise, the
name, the ranking of scores), the score-based annotators (:class:`ScoredAnnotator`), their
weighted sum (:class:`Combined`) and :class:`RewardModelAnnotator`. The kinds that judge a
text by rules are in :mod:`rlhf.simulate.rules`, the LLM judge in :mod:`rlhf.simulate.judge`,
the spec strings that name any of them in :mod:`rlhf.simulate.spec`.

- :class:`RewardModelAnnotator`: any scorer with ``score(prompts, completions)``, such as
  :class:`rlhf.modeling.scoring.RewardScorer`;
- :class:`Combined`: a weighted sum of score-based annotators, also written with
  arithmetic: ``Shorter() + 2 * Mentions(["please"])``. Each part's scores are first
  scaled to [0, 1] over the completions being ranked (min-max; all equal gives 0), so the
  weights weigh the rules against each other rather than characters against mentions.

Score-based annotators order by score; scores within ``tie_margin`` of the next better
one tie with it (so ties chain), and exactly equal scores always tie.

Noise, on every annotator, applied to its clean ranking with a seeded
``random.Random(seed)``, so the same annotator built with the same seed gives the same
rankings for the same calls:

- ``flip_prob``: one pass over adjacent groups, best first, swapping each adjacent pair
  with this probability (a swapped group can slip further down in the same pass); with
  two completions it is exactly the probability of reversing the preference;
- ``tie_prob``: afterwards, each adjacent pair of groups is merged into one tie with this
  probability (the annotator could not decide).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from typing import Any

from rlhf.preference.agreement import dense_ranks
from rlhf.preference.messages import Message, as_messages
from rlhf.preference.ranking import Ranking, letters, ranking_from_ranks


SCORE_NOISE = 1e-9  # a rule's scores closer than this always tie (floating-point noise)


def _number(value: float) -> str:
    """A number as a spec writes it: short, yet read back exactly."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability between 0 and 1, not {value}.")
    return float(value)


class Annotator:
    """The base of every simulated annotator: the noise and the ranking's canonical text.

    Subclasses give :meth:`clean_ranking` (or, for score-based ones, :meth:`scores`)."""

    base_name = "annotator"

    def __init__(self, *, flip_prob: float = 0.0, tie_prob: float = 0.0, tie_margin: float = 0.0,
                 seed: int = 0):
        self.flip_prob = _check_probability("flip_prob", flip_prob)
        self.tie_prob = _check_probability("tie_prob", tie_prob)
        if not tie_margin >= 0:
            raise ValueError(f"tie_margin cannot be negative, not {tie_margin}.")
        self.tie_margin = float(tie_margin)
        self.seed = int(seed)
        self.rng = random.Random(self.seed)

    @property
    def name(self) -> str:
        """The spec that :func:`parse_annotator` reads back into this annotator."""
        options = [
            (key, value) for key, value in (
                ("flip", self.flip_prob), ("tie", self.tie_prob), ("margin", self.tie_margin),
                ("seed", self.seed))
            if value
        ]
        suffix = ",".join(f"{key}={_number(value)}" for key, value in options)
        return f"{self.base_name}@{suffix}" if suffix else self.base_name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def with_noise(self, *, flip_prob: float | None = None, tie_prob: float | None = None,
                   tie_margin: float | None = None, seed: int | None = None) -> "Annotator":
        """A copy with other noise settings (those not given are kept) and a fresh generator."""
        other = copy.copy(self)
        Annotator.__init__(
            other,
            flip_prob=self.flip_prob if flip_prob is None else flip_prob,
            tie_prob=self.tie_prob if tie_prob is None else tie_prob,
            tie_margin=self.tie_margin if tie_margin is None else tie_margin,
            seed=self.seed if seed is None else seed,
        )
        return other

    def clean_ranking(self, prompt: list[Message], completions: list[str]) -> Ranking:
        """The ranking before noise."""
        raise NotImplementedError

    def ranking(self, prompt: Any, completions: Sequence[str]) -> Ranking:
        """The ranking of ``completions`` (shown as A, B, ...) with noise, as a :class:`Ranking`."""
        completions = list(completions)
        letters(len(completions))  # 2 to 8 completions
        return self._add_noise(self.clean_ranking(as_messages(prompt), completions))

    def rank(self, prompt: Any, completions: Sequence[str]) -> str:
        """The canonical ranking text of ``completions``, e.g. ``"B > A = C"``."""
        return self.ranking(prompt, completions).canonical

    def by_scores(self, scores: Sequence[float]) -> Ranking:
        """The ranking of scores, higher is better: scores within ``tie_margin`` of the next
        better one tie with it (so ties chain), and scores closer than ``SCORE_NOISE`` always do."""
        return ranking_from_ranks(dense_ranks(scores, max(self.tie_margin, SCORE_NOISE)))

    def _add_noise(self, ranking: Ranking) -> Ranking:
        groups = list(ranking.groups)
        if self.flip_prob:
            for position in range(len(groups) - 1):
                if self.rng.random() < self.flip_prob:
                    groups[position], groups[position + 1] = groups[position + 1], groups[position]
        if self.tie_prob:
            merged = groups[:1]
            for group in groups[1:]:
                if self.rng.random() < self.tie_prob:
                    merged[-1] = merged[-1] + group
                else:
                    merged.append(group)
            groups = merged
        return Ranking(tuple(groups))


class ScoredAnnotator(Annotator):
    """An annotator that scores each completion and orders by score, higher is better.

    Score-based annotators add up: ``a + b``, ``2 * a`` and ``a - b`` make a :class:`Combined`."""

    def scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        raise NotImplementedError

    def clean_ranking(self, prompt: list[Message], completions: list[str]) -> Ranking:
        scores = self.scores(prompt, completions)
        if not all(math.isfinite(score) for score in scores):
            raise ValueError(f"{self.name} gave a score that is not a finite number: {scores}.")
        return self.by_scores(scores)

    def _parts(self) -> list[tuple["ScoredAnnotator", float]]:
        return [(self, 1.0)]

    def __add__(self, other: "ScoredAnnotator") -> "Combined":
        if not isinstance(other, ScoredAnnotator):
            return NotImplemented
        parts = self._parts() + other._parts()
        return Combined([part for part, _ in parts], [weight for _, weight in parts])

    def __radd__(self, other: Any) -> "ScoredAnnotator":
        if other == 0:  # sum([rule, rule, ...]) starts from 0
            return self
        return NotImplemented

    def __mul__(self, weight: float) -> "Combined":
        if not isinstance(weight, (int, float)):
            return NotImplemented
        parts = self._parts()
        return Combined([part for part, _ in parts], [w * weight for _, w in parts])

    __rmul__ = __mul__

    def __neg__(self) -> "Combined":
        return self * -1

    def __sub__(self, other: "ScoredAnnotator") -> "Combined":
        if not isinstance(other, ScoredAnnotator):
            return NotImplemented
        return self + (-other)


class Combined(ScoredAnnotator):
    """A weighted sum of score-based annotators, each scaled to [0, 1] over the completions
    being ranked (min-max). The parts' own noise is not used: the combination has its own."""

    def __init__(self, parts: Sequence[ScoredAnnotator], weights: Sequence[float] | None = None, **noise):
        super().__init__(**noise)
        self.parts = list(parts)
        self.weights = [1.0] * len(self.parts) if weights is None else [float(w) for w in weights]
        if not self.parts:
            raise ValueError("Combined needs at least one part.")
        if len(self.weights) != len(self.parts):
            raise ValueError(f"Combined got {len(self.parts)} parts but {len(self.weights)} weights.")
        for part in self.parts:
            if not isinstance(part, ScoredAnnotator):
                raise ValueError(f"{part!r} ranks without scores, so it cannot be combined.")
            if isinstance(part, Combined):
                raise ValueError("Combine the parts of a combination directly, or add them with '+'.")

    @property
    def base_name(self) -> str:
        return "+".join(part.base_name if weight == 1 else f"{_number(weight)}*{part.base_name}"
                        for part, weight in zip(self.parts, self.weights))

    def _parts(self) -> list[tuple[ScoredAnnotator, float]]:
        return list(zip(self.parts, self.weights))

    def scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        total = [0.0] * len(completions)
        for part, weight in zip(self.parts, self.weights):
            scores = part.scores(prompt, completions)
            low, spread = min(scores), max(scores) - min(scores)
            for position, score in enumerate(scores):
                total[position] += weight * ((score - low) / spread if spread > SCORE_NOISE else 0.0)
        return total


class RewardModelAnnotator(ScoredAnnotator):
    """Ranks by a reward model: any ``scorer`` with ``score(prompts, completions) ->
    list[float]`` (prompts as chat messages), such as :class:`rlhf.modeling.scoring.RewardScorer`."""

    def __init__(self, scorer: Any, name: str = "reward", **noise):
        super().__init__(**noise)
        if not callable(getattr(scorer, "score", None)):
            raise ValueError(f"{scorer!r} has no score(prompts, completions) method.")
        self.scorer, self.base_name = scorer, name

    def scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        return [float(score) for score in self.scorer.score([prompt] * len(completions), completions)]
