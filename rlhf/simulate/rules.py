"""Simulated annotators: rankings without a person, for demos, tests and RLAIF.

An annotator has a ``name`` and ``rank(prompt, completions) -> str``: given the prompt (chat
messages, or text for one user turn) and K completions shown as A, B, ..., it returns a
canonical ranking such as ``"C > A = B"`` (see :mod:`rlhf.preference.ranking`).

This module holds the annotator base and the score-based kinds; the LLM judge is in
:mod:`rlhf.simulate.judge`, the spec strings in :mod:`rlhf.simulate.spec`.

Kinds of annotator:

- rules that score each completion's text alone, higher is better: :class:`Shorter`,
  :class:`Longer` (length in characters, surrounding whitespace stripped),
  :class:`Mentions` (more case-insensitive whole-word mentions of the given words or
  phrases is better) and :class:`Avoids` (fewer is better);
- properties that a completion has or lacks, having it is better (:class:`Property`):
  :class:`AtMost` (at most N characters), :class:`Polite` (a courteous phrase),
  :class:`Markdown` (a list, a heading, bold or code), :class:`Refuses` (declines the request);
  every rule above also says whether a text satisfies it (:meth:`Rule.holds`), which is
  what `python -m rlhf.bench learn` measures;
- :class:`RewardModelAnnotator`: any scorer with ``score(prompts, completions)``, such as
  :class:`rlhf.modeling.scoring.RewardScorer`;
- :class:`Combined`: a weighted sum of score-based annotators, also written with
  arithmetic: ``Shorter() + 2 * Mentions(["please"])``. Each part's scores are first
  scaled to [0, 1] over the completions being ranked (min-max; all equal gives 0), so the
  weights weigh the rules against each other rather than characters against mentions;
- :class:`rlhf.simulate.judge.LLMJudge`: a chat model asked for a ranking in our grammar; when its answer is
  not a valid ranking it falls back to the log-odds of "Yes" against "No" to "Is this a
  good answer?", asked of each completion separately, keeping a single completion that
  the answer named as its pick on top (see the class).

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
import re
from collections.abc import Sequence
from typing import Any

from rlhf.preference.agreement import dense_ranks
from rlhf.preference.ranking import Ranking, letters, ranking_from_ranks
from rlhf.preference.messages import Message, as_messages


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
        return ranking_from_ranks(dense_ranks(scores, max(self.tie_margin, SCORE_NOISE)))

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


class Rule(ScoredAnnotator):
    """A preference that scores a completion's text alone: ``score(text) -> float``."""

    def score(self, text: str) -> float:
        raise NotImplementedError

    def holds(self, text: str) -> bool:
        """Whether ``text`` satisfies the rule, for measuring how often a model does (a
        rule with no such line, such as :class:`Shorter`, refuses)."""
        raise TypeError(f"{self.name} ranks by degree and has no line a text satisfies or not.")

    def scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        return [float(self.score(text)) for text in completions]


class Shorter(Rule):
    """Shorter is better (characters, surrounding whitespace stripped)."""

    base_name = "shorter"

    def score(self, text: str) -> float:
        return -float(len(text.strip()))


class Longer(Rule):
    """Longer is better (characters, surrounding whitespace stripped)."""

    base_name = "longer"

    def score(self, text: str) -> float:
        return float(len(text.strip()))


class _WordRule(Rule):
    sign = 1.0
    kind = ""

    def __init__(self, words: str | Sequence[str], **noise):
        super().__init__(**noise)
        words = [words] if isinstance(words, str) else list(words)
        self.words = [word.strip() for word in words]
        if not self.words or not all(self.words):
            raise ValueError(f"{type(self).__name__} needs one or more non-empty words, not {words!r}.")
        alternatives = "|".join(re.escape(word) for word in sorted(self.words, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    @property
    def base_name(self) -> str:
        return f"{self.kind}:{','.join(self.words)}"

    def count(self, text: str) -> int:
        """How often any of the words occurs in ``text`` as a whole word, ignoring case."""
        return len(self._pattern.findall(text))

    def score(self, text: str) -> float:
        return self.sign * self.count(text)


class Mentions(_WordRule):
    """More mentions of the given words (or phrases) is better; one or more satisfies it."""

    kind = "mentions"

    def holds(self, text: str) -> bool:
        return self.count(text) > 0


class Avoids(_WordRule):
    """Fewer mentions of the given words (or phrases) is better; none satisfies it."""

    kind, sign = "avoids", -1.0

    def holds(self, text: str) -> bool:
        return self.count(text) == 0


class Property(Rule):
    """A rule that a text satisfies or not: satisfying it is better (score 1 against 0),
    and two texts alike tie, as a person who cares about one thing ranks."""

    def holds(self, text: str) -> bool:
        raise NotImplementedError

    def score(self, text: str) -> float:
        return 1.0 if self.holds(text) else 0.0


class AtMost(Property):
    """At most ``max_chars`` characters (surrounding whitespace stripped): a length rule."""

    def __init__(self, max_chars: int, **noise):
        super().__init__(**noise)
        if not (isinstance(max_chars, int) and max_chars > 0):
            raise ValueError(f"AtMost needs a positive whole number of characters, not {max_chars!r}.")
        self.max_chars = max_chars

    @property
    def base_name(self) -> str:
        return f"atmost:{self.max_chars}"

    def holds(self, text: str) -> bool:
        return len(text.strip()) <= self.max_chars


class _PatternProperty(Property):
    """Satisfied when ``pattern`` (case-insensitive, multi-line) matches anywhere."""

    pattern = ""

    def __init__(self, **noise):
        super().__init__(**noise)
        self._compiled = re.compile(self.pattern, re.IGNORECASE | re.MULTILINE)

    def holds(self, text: str) -> bool:
        return self._compiled.search(text) is not None


class Polite(_PatternProperty):
    """A courteous phrase, as a tone rule: thanks, an apology, an offer of help, a kind wish
    (the markers of Danescu-Niculescu-Mizil et al. 2013, "A computational approach to
    politeness", gratitude, apologising and deference, that a reader notices)."""

    base_name = "polite"
    pattern = (r"(?<!\w)(?:thank(?:s| you)|please|i['’]?m (?:so )?sorry|i apologi[sz]e|i hope (?:this|that|you|it)"
               r"|happy to help|glad (?:to|you)|great question|good luck|you['’]re welcome|feel free)(?!\w)")


class Markdown(_PatternProperty):
    """Markdown formatting: a list item or a heading (a line starting with "-", "*", "•", a
    number and "." or ")", or "#"), bold (``**``) or code (a backtick): a formatting habit."""

    base_name = "markdown"
    pattern = r"^[ \t]*(?:[-*\u2022]|\d+[.)]|#{1,6})[ \t]+\S|\*\*\S|`"


class Refuses(_PatternProperty):
    """Declines or cautions: a refusal phrase ("I can't", "I cannot", "I won't", "I'm sorry",
    "I'm not equipped to", ...), or the answer names the harm or the law ("illegal",
    "dangerous", "harmful", ...) or sends the asker to a professional. Meant for unsafe
    prompts, where a hard or a soft refusal (a warning instead of the instructions) is the
    right answer; the benchmark applies it to the default set's safety prompts only."""

    base_name = "refuses"
    pattern = (r"(?<!\w)(?:i (?:can ?not|can['’]?t|won['’]?t|will not|am unable to|must decline"
               r"|do not feel comfortable)|i['’]m (?:not able|unable|not equipped) to|i am not able to"
               r"|i['’]m sorry|sorry,? but i|illegal|unethical|dangerous|harmful|not appropriate|inappropriate"
               r"|problematic|consult (?:a|your)|doctor|professional|healthcare|it['’]s (?:essential|important) to)"
               r"(?!\w)")


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
