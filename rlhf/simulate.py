"""Simulated annotators: rankings without a person, for demos, tests and RLAIF.

An annotator has a ``name`` and ``rank(prompt, completions) -> str``: given the prompt (chat
messages, or text for one user turn) and K completions shown as A, B, ..., it returns a
canonical ranking such as ``"C > A = B"`` (see :mod:`rlhf.ranking`).

Kinds of annotator:

- rules that score each completion's text alone, higher is better: :class:`Shorter`,
  :class:`Longer` (length in characters, surrounding whitespace stripped),
  :class:`Mentions` (more case-insensitive whole-word mentions of the given words or
  phrases is better) and :class:`Avoids` (fewer is better);
- :class:`RewardModelAnnotator`: any scorer with ``score(prompts, completions)``, such as
  :class:`rlhf.scoring.RewardScorer`;
- :class:`Combined`: a weighted sum of score-based annotators, also written with
  arithmetic: ``Shorter() + 2 * Mentions(["please"])``. Each part's scores are first
  scaled to [0, 1] over the completions being ranked (min-max; all equal gives 0), so the
  weights weigh the rules against each other rather than characters against mentions;
- :class:`LLMJudge`: a chat model asked for a ranking in our grammar; when its answer is
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

Spec syntax (:func:`parse_annotator`, the CLI's ``--annotator``)::

    SPEC   := TERM ("+" TERM)* ["@" OPTION ("," OPTION)*]
    TERM   := [WEIGHT "*"] NAME [":" ARGS]
    NAME   := shorter | longer | mentions:WORD,WORD,... | avoids:WORD,...
              | reward:PATH | judge:PATH
    OPTION := flip=P | tie=P | margin=X | seed=N

for example ``shorter``, ``mentions:please,thanks``, ``shorter+2*mentions:please`` or
``avoids:sorry@flip=0.1,seed=3``. ``judge:PATH`` stands alone (a judge ranks, it does not
score); words and paths cannot contain ``+``, ``@`` or ``*`` (and words no ``,``). An
annotator's ``name`` is its spec, and parsing the name gives the same annotator back.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlhf.agreement import dense_ranks
from rlhf.errors import UserError
from rlhf.ranking import Ranking, RankingError, letters, parse_ranking, ranking_from_ranks

Message = dict[str, str]
EQUAL_SCORE = 1e-9  # scores closer than this always tie (floating-point noise)
SPEC_NAMES = ("shorter", "longer", "mentions:WORDS", "avoids:WORDS", "reward:PATH", "judge:PATH")
SPEC_OPTIONS = {"flip": "flip_prob", "tie": "tie_prob", "margin": "tie_margin", "seed": "seed"}


class AnnotatorSpecError(UserError, ValueError):
    """An annotator spec that cannot be read; the message is one sentence saying why."""


def as_messages(prompt: Any) -> list[Message]:
    """A prompt as chat messages: text becomes one user turn; a sequence (or the numpy
    array Parquet gives back) of {role, content} is made plain."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(message["role"]), "content": str(message["content"])} for message in prompt]


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
        return ranking_from_ranks(dense_ranks(scores, max(self.tie_margin, EQUAL_SCORE)))

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
    """More mentions of the given words (or phrases) is better."""

    kind = "mentions"


class Avoids(_WordRule):
    """Fewer mentions of the given words (or phrases) is better."""

    kind, sign = "avoids", -1.0


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
                total[position] += weight * ((score - low) / spread if spread > EQUAL_SCORE else 0.0)
        return total


class RewardModelAnnotator(ScoredAnnotator):
    """Ranks by a reward model: any ``scorer`` with ``score(prompts, completions) ->
    list[float]`` (prompts as chat messages), such as :class:`rlhf.scoring.RewardScorer`."""

    def __init__(self, scorer: Any, name: str = "reward", **noise):
        super().__init__(**noise)
        if not callable(getattr(scorer, "score", None)):
            raise ValueError(f"{scorer!r} has no score(prompts, completions) method.")
        self.scorer, self.base_name = scorer, name

    def scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        return [float(score) for score in self.scorer.score([prompt] * len(completions), completions)]


_RANKING_IN_TEXT = re.compile(r"[A-H](?:\s*[>=]\s*[A-H])+")


def find_ranking(answer: str, k: int) -> Ranking | None:
    """The first valid ranking of ``k`` completions in a model's answer: the whole answer,
    its first line, or any run like ``B > A = C`` inside it; None when there is none."""
    stripped = answer.strip()
    candidates = [stripped, stripped.split("\n", 1)[0], *_RANKING_IN_TEXT.findall(answer)]
    for candidate in candidates:
        try:
            return parse_ranking(candidate, k)
        except RankingError:
            continue
    return None


def find_top_pick(answer: str, k: int) -> str | None:
    """The one shown letter that a model's answer names as a standalone capital
    ("The best is B."); None when it names none or several."""
    named = set(re.findall(rf"(?<![A-Za-z])[{letters(k)}](?![A-Za-z])", answer))
    return named.pop() if len(named) == 1 else None


class LLMJudge(Annotator):
    """A chat model asked to rank the completions in our grammar (weak with a small model).

    The judge sees the conversation and the completions labelled "Answer A", "Answer B", ...
    and is asked to reply with only a ranking like ``B > A = C``; it decodes greedily.
    When no valid ranking can be found in its answer (:func:`find_ranking`), each
    completion is scored on its own instead: the judge is shown the question and that one
    answer, asked "Is this a good answer? Reply Yes or No.", and the score is the log-odds
    log P("Yes") - log P("No") of its first reply token; if the answer did name one
    completion alone as its pick (:func:`find_top_pick`, as small models do: "The answer
    is A."), that one goes first and the scores order the rest. So it always returns a
    valid ranking. ``last_method`` says how the last ranking was made ("parsed",
    "top_pick" or "yes_no"), ``last_answer`` holds the judge's text, and ``counts``
    tallies the three.

    Args:
        policy: a loaded :class:`rlhf.models.Policy` (``.model``, ``.tokenizer``).
        name (str): the annotator's name (``judge:PATH`` when parsed from a spec).
        max_chars (int): each completion is cut to this many characters in the judge's prompt.
    """

    def __init__(self, policy: Any, name: str = "judge", max_chars: int = 1500, **noise):
        super().__init__(**noise)
        self.policy, self.base_name, self.max_chars = policy, name, max_chars
        self.last_answer: str = ""
        self.last_method: str | None = None
        self.counts = {"parsed": 0, "top_pick": 0, "yes_no": 0}

    @staticmethod
    def _question(prompt: list[Message]) -> str:
        if len(prompt) == 1:
            return prompt[0]["content"]
        return "\n".join(f"{message['role']}: {message['content']}" for message in prompt)

    def _cut(self, text: str) -> str:
        return text if len(text) <= self.max_chars else text[: self.max_chars] + " [...]"

    def judge_prompt(self, prompt: list[Message], completions: list[str]) -> list[Message]:
        """The conversation the judge is asked to rank in."""
        shown = letters(len(completions))
        answers = "\n\n".join(f"Answer {letter}:\n{self._cut(text)}" for letter, text in zip(shown, completions))
        example = " > ".join(shown[:2]) + (" = " + " > ".join(shown[2:]) if len(shown) > 2 else "")
        return [{"role": "user", "content": (
            f"Rank these answers to the question, best first.\n\nQuestion:\n{self._question(prompt)}\n\n"
            f"{answers}\n\nReply with only the ranking: the letters {', '.join(shown)}, each once, "
            f"with '>' meaning better than and '=' meaning equally good, for example: {example}"
        )}]

    def clean_ranking(self, prompt: list[Message], completions: list[str]) -> Ranking:
        from rlhf.generate import generate_tokens
        from rlhf.sampling import SamplingParams

        params = SamplingParams(temperature=0.0, max_new_tokens=4 * len(completions) + 16)
        generated = generate_tokens(self.policy, [self.judge_prompt(prompt, completions)], params, k=1)
        response = generated.response_ids[0][generated.response_mask[0].bool()]
        self.last_answer = self.policy.tokenizer.decode(response, skip_special_tokens=True)
        ranking = find_ranking(self.last_answer, len(completions))
        if ranking is not None:
            self.last_method = "parsed"
        else:
            scores = self.yes_no_scores(prompt, completions)
            pick = find_top_pick(self.last_answer, len(completions))
            if pick is not None:  # above every score
                scores[letters(len(completions)).index(pick)] = max(scores) + 1.0 + self.tie_margin
            self.last_method = "yes_no" if pick is None else "top_pick"
            ranking = ranking_from_ranks(dense_ranks(scores, max(self.tie_margin, EQUAL_SCORE)))
        self.counts[self.last_method] += 1
        return ranking

    def yes_no_scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        """log P("Yes") - log P("No") of the judge's first reply token, per completion."""
        import torch

        tokenizer, model = self.policy.tokenizer, self.policy.model
        yes, no = (tokenizer.encode(word, add_special_tokens=False)[0] for word in ("Yes", "No"))
        scores = []
        with torch.inference_mode():
            for text in completions:
                messages = [{"role": "user", "content": (
                    f"Question:\n{self._question(prompt)}\n\nAnswer:\n{self._cut(text)}\n\n"
                    "Is this a good answer? Reply Yes or No."
                )}]
                rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = tokenizer(rendered, return_tensors="pt", add_special_tokens=False)["input_ids"]
                logits = model(input_ids=ids.to(model.device), use_cache=False).logits[0, -1].float()
                log_probs = torch.log_softmax(logits, dim=-1)
                scores.append(float(log_probs[yes] - log_probs[no]))
        return scores


def _parse_options(text: str, spec: str) -> dict[str, float]:
    options: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        key = key.strip().lower()
        if not equals or key not in SPEC_OPTIONS:
            raise AnnotatorSpecError(
                f"Unknown option '{item}' in annotator '{spec}': use "
                f"{', '.join(f'{option}=' for option in SPEC_OPTIONS)} after '@'.")
        try:
            number = int(value) if key == "seed" else float(value)
        except ValueError:
            raise AnnotatorSpecError(f"Option '{item}' in annotator '{spec}' needs a number.") from None
        options[SPEC_OPTIONS[key]] = number
    return options


def _parse_term(term: str, spec: str, model_path: Callable[[str], Path]) -> tuple[Annotator, float]:
    weight = 1.0
    head, star, rest = term.partition("*")
    if star:
        try:
            weight = float(head)
        except ValueError:
            raise AnnotatorSpecError(f"'{head.strip()}' in annotator '{spec}' is not a number to weigh a rule by.") from None
        term = rest
    name, colon, argument = (part.strip() for part in term.partition(":"))
    name = name.lower()
    words = [word.strip() for word in argument.split(",") if word.strip()]
    if name in ("shorter", "longer") and not colon:
        return (Shorter() if name == "shorter" else Longer()), weight
    if name in ("mentions", "avoids") and words:
        return (Mentions(words) if name == "mentions" else Avoids(words)), weight
    if name in ("reward", "judge") and argument:
        if name == "reward":
            from rlhf.scoring import RewardScorer

            return RewardModelAnnotator(RewardScorer(model_path(argument)), name=f"reward:{argument}"), weight
        from rlhf.models import load_policy

        return LLMJudge(load_policy(model_path(argument)), name=f"judge:{argument}"), weight
    where = "" if term.strip() == spec.strip() else f" in '{spec}'"
    raise AnnotatorSpecError(
        f"Unknown annotator '{term.strip()}'{where}: use {', '.join(SPEC_NAMES)}, "
        "joined with '+', optionally weighted as '2*NAME' and followed by '@flip=P,tie=P,margin=X,seed=N'.")


def parse_annotator(spec: str, model_path: Callable[[str], Path] | None = None) -> Annotator:
    """Build an annotator from a spec (syntax in the module docstring).

    Args:
        spec (str): e.g. ``"shorter+2*mentions:please@flip=0.1,seed=3"``.
        model_path: turns the PATH of ``reward:PATH`` and ``judge:PATH`` into a directory
            (for instance a model version's name into its directory under the home);
            by default PATH is a directory or hub id as written. Those two load a model.

    Raises:
        AnnotatorSpecError: a ``UserError`` and a ``ValueError``, one sentence naming what
            is known.
    """
    model_path = model_path or Path
    terms_text, _, options_text = (spec or "").partition("@")
    terms = terms_text.split("+")
    if not terms_text.strip() or not all(term.strip() for term in terms):
        raise AnnotatorSpecError(
            f"The annotator '{spec}' names no rule: use {', '.join(SPEC_NAMES)}, joined with '+'.")
    options = _parse_options(options_text, spec)
    if len(terms) > 1 and any(term.partition("*")[2 if "*" in term else 0].strip().lower().startswith("judge")
                              for term in terms):
        raise AnnotatorSpecError(f"A judge ranks on its own and cannot be combined with '+' in '{spec}'.")
    parts = [_parse_term(term, spec, model_path) for term in terms]
    try:
        if len(parts) == 1 and parts[0][1] == 1.0:
            return parts[0][0].with_noise(**options)
        return Combined([part for part, _ in parts], [weight for _, weight in parts], **options)
    except ValueError as error:
        raise AnnotatorSpecError(f"The annotator '{spec}' is not usable: {error}") from None


def judge_winrate(
    annotator: Annotator,
    prompts: Sequence[Any],
    completions_a: Sequence[str],
    completions_b: Sequence[str],
    randomise_order: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """How often ``annotator`` ranks each prompt's completion from A above the one from B.

    Each pair is shown in a random order (seeded by ``seed``) unless ``randomise_order`` is
    False, so that an annotator preferring the first or second position favours neither side.

    Returns:
        dict: ``n``, ``wins``, ``ties``, ``losses`` (counts for A) and ``win_rate``, the
        share of wins with ties as half (``nan`` for no prompts).
    """
    if not len(prompts) == len(completions_a) == len(completions_b):
        raise ValueError(
            f"Got {len(prompts)} prompts, {len(completions_a)} completions from A and "
            f"{len(completions_b)} from B: give one of each per prompt.")
    order = random.Random(seed)
    wins = ties = losses = 0
    for prompt, a, b in zip(prompts, completions_a, completions_b):
        swapped = randomise_order and order.random() < 0.5
        ranks = annotator.ranking(prompt, [b, a] if swapped else [a, b]).ranks()
        rank_a, rank_b = (ranks["B"], ranks["A"]) if swapped else (ranks["A"], ranks["B"])
        if rank_a < rank_b:
            wins += 1
        elif rank_a == rank_b:
            ties += 1
        else:
            losses += 1
    n = wins + ties + losses
    return {"n": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": (wins + 0.5 * ties) / n if n else float("nan")}
