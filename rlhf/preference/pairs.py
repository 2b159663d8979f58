"""Turn stored rankings into training rows in TRL's conversational formats.

Input is a DataFrame with one row per annotator's ranking: ``ranking_id``,
``comparison_id``, ``prompt`` (str), ``completions`` (list of str in shown order A, B, ...),
``ranking`` (canonical text) and ``user``, plus an optional ``messages`` column holding the
conversation that replaces ``prompt`` when it is set. Several annotators on one comparison
stay separate rows here; merging them is a dataset-building decision made elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from rlhf.preference.messages import Message, prompt_messages
from rlhf.preference.ranking import Pair, Ranking, letter_index, parse_ranking

PAIR_COLUMNS = ["prompt", "chosen", "rejected", "margin", "comparison_id", "ranking_id", "user"]
TIED_COLUMNS = ["prompt", "completion_a", "completion_b", "comparison_id", "ranking_id", "user"]
UNPAIRED_COLUMNS = ["prompt", "completion", "label", "comparison_id", "ranking_id", "user"]
SELECTIONS = ("all", "best_vs_worst")


def _assistant(content: str) -> list[Message]:
    return [{"role": "assistant", "content": content}]


def _completion(row: Mapping[str, Any], letter: str) -> str:
    """The text of the completion the row showed under ``letter``."""
    completions = list(row["completions"])
    return completions[letter_index(letter, len(completions))]


def _ranking(row: Mapping[str, Any]) -> Ranking:
    """The row's ranking, parsed against the number of completions it showed."""
    return parse_ranking(row["ranking"], k=len(row["completions"]))


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
        ranking = _ranking(row)
        for pair in _selected_pairs(ranking, selection):
            rows.append(
                {
                    "prompt": prompt_messages(row),
                    "chosen": _assistant(_completion(row, pair.better)),
                    "rejected": _assistant(_completion(row, pair.worse)),
                    "margin": float(pair.margin),
                    "comparison_id": row["comparison_id"],
                    "ranking_id": row["ranking_id"],
                    "user": row["user"],
                }
            )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def tied_pairs(rankings: pd.DataFrame) -> pd.DataFrame:
    """The pairs annotators tied, for reward losses that also learn "equally good".

    Completions are in the same assistant-message format as ``chosen``/``rejected``;
    ``completion_a`` is the one shown first.
    """
    rows = []
    for row in rankings.to_dict("records"):
        ranking = _ranking(row)
        for first, second in ranking.tied_pairs():
            rows.append(
                {
                    "prompt": prompt_messages(row),
                    "completion_a": _assistant(_completion(row, first)),
                    "completion_b": _assistant(_completion(row, second)),
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
        ranking = _ranking(row)
        for letter, label in _rank_labels(ranking).items():
            key = (row["comparison_id"], letter, row["user"])
            labelled.add(key)
            rows.append(_unpaired_row(row, letter, explicit.get(key, label)))

    by_annotator = {(row["comparison_id"], row["user"]): row for row in records}
    for (comparison_id, letter, user), good in explicit.items():
        row = by_annotator.get((comparison_id, user))
        if row is not None and (comparison_id, letter, user) not in labelled:
            rows.append(_unpaired_row(row, letter, good))
    return pd.DataFrame(rows, columns=UNPAIRED_COLUMNS)


def _unpaired_row(row: Mapping[str, Any], letter: str, label: bool) -> dict[str, Any]:
    return {
        "prompt": prompt_messages(row),
        "completion": _assistant(_completion(row, letter)),
        "label": label,
        "comparison_id": row["comparison_id"],
        "ranking_id": row["ranking_id"],
        "user": row["user"],
    }
