"""The ranking grammar: ``C > B = D > A``.

Letters name completions in the order they were shown (A, B, C, ...); ``>`` is a strict
preference and ``=`` a tie. Every shown completion appears exactly once. The canonical
form lists the best group first, sorts the letters inside each tie group, and puts one
space around each operator. Parsing is forgiving about case and spacing (fast annotators
type ``c>b=d>a``) and strict about everything else: any other mistake raises a
:class:`RankingError` whose message is one sentence an annotator can act on.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

MIN_K, MAX_K = 2, 8
OPERATORS = (">", "=")


class RankingError(ValueError):
    """A ranking that cannot be accepted; ``str(error)`` is one plain sentence saying why."""


def letters(k: int) -> str:
    """The letters naming ``k`` shown completions, e.g. ``"ABCD"`` for 4."""
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"A comparison shows between {MIN_K} and {MAX_K} completions, not {k}.")
    return "ABCDEFGH"[:k]


def letter_index(letter: str, k: int) -> int:
    """The 0-based position of ``letter`` among ``k`` shown completions (``"C"`` -> 2)."""
    shown = letters(k)
    if len(letter) != 1 or letter not in shown:
        raise RankingError(f"'{letter}' is not one of the shown completions {_span(k)}.")
    return shown.index(letter)


def _span(k: int) -> str:
    """The shown letters as a range, e.g. ``"A–D"``."""
    shown = letters(k)
    return f"{shown[0]}–{shown[-1]}"


@dataclass(frozen=True)
class Pair:
    """One preference taken from a ranking: ``better`` was ranked above ``worse``.

    ``margin`` is the rank distance, the difference of the two group positions (>= 1).
    """

    better: str
    worse: str
    margin: int


@dataclass(frozen=True)
class Ranking:
    """An ordering of K shown completions into groups of equals, best group first.

    Letters inside a group are kept sorted so that equal rankings compare equal and
    print the same.
    """

    groups: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        groups = tuple(tuple(sorted(group)) for group in self.groups)
        ranked = sorted(letter for group in groups for letter in group)
        if not all(groups) or ranked != list(letters(len(ranked))):
            raise ValueError(
                f"{self.groups!r} does not put each of the letters A, B, ... exactly once "
                "into non-empty groups."
            )
        # Frozen, so normalising the caller's groups needs the object-level setter.
        object.__setattr__(self, "groups", groups)

    @property
    def k(self) -> int:
        """How many completions were ranked."""
        return sum(len(group) for group in self.groups)

    @property
    def canonical(self) -> str:
        """The canonical text, e.g. ``"C > B = D > A"``."""
        return " > ".join(" = ".join(group) for group in self.groups)

    def ranks(self) -> dict[str, int]:
        """Each letter's 1-based dense rank, its group's position: ``{"C": 1, "B": 2, ...}``."""
        return {
            letter: position
            for position, group in enumerate(self.groups, start=1)
            for letter in group
        }

    def rank_list(self) -> list[int]:
        """The ranks in shown order A, B, C, ... (the inverse of :func:`ranking_from_ranks`)."""
        ranks = self.ranks()
        return [ranks[letter] for letter in letters(self.k)]

    def pairs(self) -> list[Pair]:
        """Every (better, worse) pair of completions in different groups, best first."""
        return [
            Pair(better, worse, margin=worse_position - better_position)
            for (better_position, better_group), (worse_position, worse_group) in (
                itertools.combinations(enumerate(self.groups), 2)
            )
            for better in better_group
            for worse in worse_group
        ]

    def tied_pairs(self) -> list[tuple[str, str]]:
        """Every unordered pair inside a tie group, once each, in alphabetical order."""
        return [pair for group in self.groups for pair in itertools.combinations(group, 2)]

    @property
    def top(self) -> tuple[str, ...]:
        """The best group: the KTO "desirable" completions."""
        return self.groups[0]

    @property
    def bottom(self) -> tuple[str, ...]:
        """The worst group: the KTO "undesirable" completions.

        Empty for a full tie: calling everything both best and worst would contradict
        itself, and an annotator who ties everything has marked nothing as bad. ``top``
        still holds everything then, so callers wanting a clear signal check
        :attr:`is_full_tie`.
        """
        return self.groups[-1] if len(self.groups) > 1 else ()

    @property
    def is_full_tie(self) -> bool:
        """True when every completion sits in one tie group."""
        return len(self.groups) == 1


@dataclass(frozen=True)
class _Token:
    kind: Literal["letter", "operator", "separator", "other"]
    text: str


# One ASCII letter at a time, so that "AB" reads as two letters missing an operator.
# Symbols are read as whole runs so that ">=" or "==" is reported as written.
_TOKEN_PATTERN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<letter>[A-Za-z])"
    r"|(?P<other>(?:(?![A-Za-z])[^\W_])+)"
    r"|(?P<symbols>(?:[^\w\s]|_)+)"
)


def _tokens(text: str) -> list[_Token]:
    """Split ranking text into letters, operators, wrong separators and other words."""
    tokens = []
    for match in _TOKEN_PATTERN.finditer(text):
        kind = match.lastgroup
        if kind == "space":
            continue
        if kind == "letter":
            tokens.append(_Token("letter", match.group().upper()))
        elif kind == "symbols":
            symbols = match.group()
            tokens.append(_Token("operator" if symbols in OPERATORS else "separator", symbols))
        else:
            tokens.append(_Token("other", match.group()))
    return tokens


def _quoted_list(items: Sequence[str]) -> str:
    """``'A'``, ``'A' and 'C'``, ``'A', 'C' and 'D'``."""
    quoted = [f"'{item}'" for item in items]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _separator_error(separator: str) -> RankingError:
    """The error for a symbol other than the two operators; '<' gets the fix spelled out."""
    if "<" in separator:
        return RankingError(
            f"Found '{separator}', but only '>' and '=' are allowed: write the better "
            "completion first, as in 'B > A' rather than 'A < B'."
        )
    return RankingError(
        f"Found '{separator}', but only '>' (better than) and '=' (tie) are allowed "
        "between completions."
    )


def parse_ranking(text: str, k: int) -> Ranking:
    """Read a ranking of ``k`` shown completions; raise :class:`RankingError` if invalid.

    The first problem in reading order is reported, so the message points at the
    place the annotator has to look at.
    """
    tokens = _tokens(text or "")
    if not tokens:
        raise RankingError(
            f"The ranking is empty: order the completions {_span(k)} with '>' and '='."
        )

    groups: list[list[str]] = []
    seen: set[str] = set()
    previous: _Token | None = None
    for token in tokens:
        if token.kind == "separator":
            raise _separator_error(token.text)
        if token.kind == "other":
            raise RankingError(
                f"'{token.text}' is not a completion letter: use the letters {_span(k)}."
            )
        if token.kind == "operator":
            if previous is None:
                raise RankingError(
                    f"The ranking starts with '{token.text}': put a completion before it."
                )
            if previous.kind == "operator":
                raise RankingError(
                    f"Two operators in a row after '{groups[-1][-1]}': "
                    "put a completion between them."
                )
        else:
            if previous is not None and previous.kind == "letter":
                raise RankingError(
                    f"'{previous.text}' and '{token.text}' need an operator between them: "
                    "'>' or '='."
                )
            letter_index(token.text, k)  # rejects a letter that was not shown
            if token.text in seen:
                raise RankingError(f"'{token.text}' appears more than once.")
            seen.add(token.text)
            if previous is not None and previous.text == "=":
                groups[-1].append(token.text)
            else:
                groups.append([token.text])
        previous = token

    if previous is not None and previous.kind == "operator":
        raise RankingError(f"The ranking ends with '{previous.text}': put a completion after it.")
    missing = [letter for letter in letters(k) if letter not in seen]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise RankingError(f"{_quoted_list(missing)} {verb} missing: rank every shown completion.")
    return Ranking(tuple(tuple(group) for group in groups))


def ranking_from_ranks(ranks: Sequence[int], k: int | None = None) -> Ranking:
    """Build a ranking from one rank per completion in shown order (1 = best).

    Equal ranks are ties and gaps are allowed, so ``[1, 1, 3, 4]`` is ``A = B > C > D``;
    this is what the UI's per-completion rank selectors produce. ``k`` defaults to the
    number of ranks given.
    """
    shown = letters(len(ranks) if k is None else k)
    if len(ranks) != len(shown):
        raise RankingError(
            f"Got {len(ranks)} ranks for {len(shown)} completions: "
            "give every shown completion one rank."
        )
    for letter, rank in zip(shown, ranks):
        if rank is None:
            raise RankingError(f"'{letter}' has no rank: give every shown completion one rank.")
        # bool is an Integral too, but True/False are never meant as ranks.
        if isinstance(rank, bool) or not isinstance(rank, Integral) or rank < 1:
            raise RankingError(
                f"'{letter}' has rank {rank!r}, but ranks are whole numbers from 1 up."
            )
    positions = sorted(set(ranks))
    return Ranking(
        tuple(
            tuple(letter for letter, rank in zip(shown, ranks) if rank == position)
            for position in positions
        )
    )
