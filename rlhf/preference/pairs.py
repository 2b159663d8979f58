"""Turn stored rankings into training rows in TRL's conversational formats.

Input is a DataFrame with one row per annotator's ranking: ``ranking_id``,
``comparison_id``, ``prompt`` (str), ``completions`` (list of str in shown order A, B, ...),
``ranking`` (canonical text) and ``user``, plus an optional ``messages`` column holding the
conversation that replaces ``prompt`` when it is set. Several annotators on one comparison
stay separate rows here; merging them is a dataset-building decision made elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

from rlhf.preference.messages import Message, prompt_messages
from rlhf.preference.ranking import Pair, Ranking, letter_index, letters, parse_ranking, ranking_from_ranks

PAIR_COLUMNS = ["prompt", "chosen", "rejected", "margin", "comparison_id", "ranking_id", "user"]
TIED_COLUMNS = ["prompt", "completion_a", "completion_b", "comparison_id", "ranking_id", "user"]
UNPAIRED_COLUMNS = ["prompt", "completion", "label", "comparison_id", "ranking_id", "user"]
SELECTIONS = ("all", "best_vs_worst")


def _assistant(content: str) -> list[Message]:
    return [{"role": "assistant", "content": content}]


@dataclass(frozen=True)
class _Shown:
    """One ranking row read once, however many training rows it gives (a ranking of 8 gives
    up to 28 pairs): its conversation, its completions by letter, its parsed ranking."""

    conversation: list[Message]
    texts: dict[str, str]
    ranking: Ranking

    def prompt(self) -> list[Message]:
        """The conversation as a list of its own for each training row."""
        return [dict(message) for message in self.conversation]

    def text(self, letter: str) -> str:
        """The completion shown under `letter`; a letter not shown is a RankingError."""
        found = self.texts.get(letter)
        if found is None:
            letter_index(letter, len(self.texts))  # raises, saying which letters were shown
        return found


def _shown(row: Mapping[str, Any]) -> _Shown:
    texts = list(row["completions"])
    return _Shown(prompt_messages(row), dict(zip(letters(len(texts)), texts)), _parsed(row["ranking"], len(texts)))


@lru_cache(maxsize=4096)
def _parsed(text: str, k: int) -> Ranking:
    # Rankings repeat (K=4 has 75 orders): parsing each text once took a third of an
    # export's time at 100k rankings. A Ranking is frozen, so sharing one is safe.
    return parse_ranking(text, k=k)


def _selected_pairs(ranking: Ranking, selection: str) -> list[Pair]:
    if selection == "all":
        return ranking.pairs()
    return [
        pair
        for pair in ranking.pairs()
        if pair.better in ranking.top and pair.worse in ranking.bottom
    ]


def preference_pairs(rankings: pd.DataFrame, selection: str = "all") -> pd.DataFrame:
    """Chosen/rejected pairs for reward modelling and DPO, one per (better, worse) pair.

    ``selection="all"`` takes every pair of completions in different groups;
    ``"best_vs_worst"`` only pairs each top-group completion with each bottom-group one,
    which keeps the clearest signal and gives nothing for a full tie. ``margin`` is the
    rank distance as a float, ready for a margin-aware reward loss.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, not {selection!r}.")
    rows = []
    for row in rankings.to_dict("records"):
        shown = _shown(row)
        for pair in _selected_pairs(shown.ranking, selection):
            rows.append(
                {
                    "prompt": shown.prompt(),
                    "chosen": _assistant(shown.text(pair.better)),
                    "rejected": _assistant(shown.text(pair.worse)),
                    "margin": float(pair.margin),
                    "comparison_id": row["comparison_id"],
                    "ranking_id": row["ranking_id"],
                    "user": row["user"],
                }
            )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


RANKINGS_OBJECTIVE = "ranking"   # a reward model's objective when it learns the rankings themselves


def rated_rankings(rankings: pd.DataFrame, ratings: pd.DataFrame, dimension: str,
                   keep_ties: bool = False) -> pd.DataFrame:
    """Rankings rewritten as what annotators rated on one `dimension` (helpfulness,
    harmlessness, ...), for a reward model of that dimension (Llama 2's helpfulness and
    safety reward models, Touvron et al. 2023, section 3.2.2).

    `ratings` has ranking_id, letter, dimension, score (`storage.feedback.ratings_frame`).
    Each ranking keeps only its completions rated on `dimension`, relettered A, B, ... in
    shown order; `ranking` becomes their order by score (equal scores tied) and
    `rating_ranks` one rank per kept completion whose differences are the rating gaps
    (`top score + 1 - score`), so that a pair's margin is the gap (a 5 over a 2: 3). A
    ranking left with fewer than two rated completions, or (without `keep_ties`) with
    every kept completion rated the same, gives no row. `scores` keeps the ratings.
    """
    chosen = ratings[ratings["dimension"] == dimension]
    by_ranking: dict[Any, dict[str, int]] = {}
    for ranking_id, letter, score in zip(chosen["ranking_id"], chosen["letter"], chosen["score"]):
        by_ranking.setdefault(ranking_id, {})[letter] = int(score)
    rows = []
    for row in rankings.to_dict("records"):
        scored = by_ranking.get(row["ranking_id"], {})
        kept = [i for i, letter in enumerate(letters(len(row["completions"]))) if letter in scored]
        scores = [scored[letters(len(row["completions"]))[i]] for i in kept]
        if len(kept) < 2 or (not keep_ties and len(set(scores)) < 2):
            continue
        ranks = [max(scores) + 1 - score for score in scores]
        out = {**row, "completions": [list(row["completions"])[i] for i in kept],
               "ranking": ranking_from_ranks(ranks).canonical, "rating_ranks": ranks, "scores": scores}
        if "ranks" in row:
            out["ranks"] = ranks
        if "model_versions" in row:
            out["model_versions"] = [list(row["model_versions"])[i] for i in kept]
        rows.append(out)
    return pd.DataFrame(rows, columns=[*rankings.columns, "rating_ranks", "scores"])


def only_full_ties(rankings: pd.DataFrame) -> bool:
    """Whether every ranking (columns ranking, completions) ties all its completions, so that
    no preference pair comes out of them (True for no rankings at all)."""
    return all(_parsed(ranking, len(texts)).is_full_tie
               for ranking, texts in zip(rankings["ranking"], rankings["completions"]))


def tied_pairs(rankings: pd.DataFrame) -> pd.DataFrame:
    """The pairs annotators tied, for reward losses that also learn "equally good".

    Completions are in the same assistant-message format as ``chosen``/``rejected``;
    ``completion_a`` is the one shown first.
    """
    rows = []
    for row in rankings.to_dict("records"):
        shown = _shown(row)
        for first, second in shown.ranking.tied_pairs():
            rows.append(
                {
                    "prompt": shown.prompt(),
                    "completion_a": _assistant(shown.text(first)),
                    "completion_b": _assistant(shown.text(second)),
                    "comparison_id": row["comparison_id"],
                    "ranking_id": row["ranking_id"],
                    "user": row["user"],
                }
            )
    return pd.DataFrame(rows, columns=TIED_COLUMNS)


def _rank_labels(ranking: Ranking) -> dict[str, bool]:
    """Top group desirable, bottom group undesirable; middle groups say neither."""
    if ranking.is_full_tie:
        return {}
    return {letter: True for letter in ranking.top} | {letter: False for letter in ranking.bottom}


def _explicit_labels(labels: pd.DataFrame | None) -> dict[tuple[Any, str, Any], bool]:
    """``(comparison_id, letter, user) -> good`` from explicit marks; the last mark wins."""
    if labels is None:
        return {}
    return {
        (mark["comparison_id"], str(mark["letter"]).strip().upper(), mark["user"]): bool(
            mark["good"]
        )
        for mark in labels.to_dict("records")
        # An unmarked completion is no label at all, not a "bad" one.
        if not pd.isna(mark["good"])
    }


def unpaired_examples(rankings: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Single completions with a good/bad label, TRL's unpaired (KTO) format.

    From each ranking the top group is labelled True and the bottom group False; middle
    groups are dropped and a full tie gives nothing. ``labels`` holds explicit
    per-completion marks (``comparison_id``, ``letter``, ``good``, ``user``), made along
    with a ranking: a mark replaces the rank-derived label of the same comparison, letter
    and user, and adds a row where the ranking gave none. A mark whose user's ranking of
    that comparison is not in ``rankings`` is skipped, so that filtering the rankings
    (by round, by annotator) filters the marks with them.
    """
    explicit = _explicit_labels(labels)
    records = rankings.to_dict("records")
    rows: list[dict[str, Any]] = []
    labelled: set[tuple[Any, str, Any]] = set()
    for row in records:
        shown = _shown(row)
        for letter, label in _rank_labels(shown.ranking).items():
            key = (row["comparison_id"], letter, row["user"])
            labelled.add(key)
            rows.append(_unpaired_row(row, shown, letter, explicit.get(key, label)))

    by_annotator = {(row["comparison_id"], row["user"]): row for row in records}
    for (comparison_id, letter, user), good in explicit.items():
        row = by_annotator.get((comparison_id, user))
        if row is not None and (comparison_id, letter, user) not in labelled:
            rows.append(_unpaired_row(row, _shown(row), letter, good))
    return pd.DataFrame(rows, columns=UNPAIRED_COLUMNS)


def _unpaired_row(row: Mapping[str, Any], shown: _Shown, letter: str, label: bool) -> dict[str, Any]:
    return {
        "prompt": shown.prompt(),
        "completion": _assistant(shown.text(letter)),
        "label": label,
        "comparison_id": row["comparison_id"],
        "ranking_id": row["ranking_id"],
        "user": row["user"],
    }
