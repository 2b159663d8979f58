"""Rankings and what comes with them: per-completion ranks, labels and ratings."""

from __future__ import annotations

import json

import pandas as pd

from storage.db import first_row


class DuplicateRanking(ValueError):
    pass


def add_ranking(
    cur,
    comparison_id: int,
    annotator: str,
    ranking: str,
    ranks: dict[str, int],
    source: str = "human",
    seconds_spent: float | None = None,
    comment: str | None = None,
    better_answer: str | None = None,
) -> int:
    """Store a validated, canonical ranking and one rank per completion (`ranks`: letter
    to 1-based rank). Raises DuplicateRanking when `annotator` already ranked it."""
    existing = ranking_by(cur, comparison_id, annotator)
    if existing:
        raise DuplicateRanking(
            f"{annotator} already ranked comparison {comparison_id} as '{existing}'; rankings are never overwritten."
        )
    ranking_id = cur.execute(
        "INSERT INTO rankings (comparison_id, annotator, source, ranking, seconds_spent, comment, better_answer)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [comparison_id, annotator, source, ranking, seconds_spent, comment, better_answer],
    ).fetchall()[0][0]
    cur.executemany(
        "INSERT INTO ranking_ranks (ranking_id, completion_id, rank)"
        " SELECT ?, id, ? FROM completions WHERE comparison_id = ? AND letter = ?",
        [[ranking_id, rank, comparison_id, letter] for letter, rank in ranks.items()],
    )
    return ranking_id


def ranking_by(cur, comparison_id: int, annotator: str) -> str | None:
    """The ranking `annotator` gave this comparison, if any."""
    row = first_row(cur.execute(
        "SELECT ranking FROM rankings WHERE comparison_id = ? AND annotator = ?", [comparison_id, annotator]
    ))
    return row and row[0]


def count(cur) -> int:
    return cur.execute("SELECT count(*) FROM rankings").fetchall()[0][0]


def rankings_frame(cur) -> pd.DataFrame:
    """Every ranking with its comparison, for exports and training data.

    Columns: ranking_id, comparison_id, prompt, messages (list of dicts), completions
    (texts, A first), model_versions (per completion), ranking, ranks, user, source,
    seconds_spent, better_answer, comment, created_at.
    """
    frame = cur.execute(
        "SELECT r.id AS ranking_id, r.comparison_id, p.prompt_set, p.text AS prompt, p.messages,"
        "       list(m.text ORDER BY m.letter) AS completions,"
        "       list(m.model_version ORDER BY m.letter) AS model_versions,"
        "       r.ranking, list(rr.rank ORDER BY m.letter) AS ranks,"
        "       r.annotator AS user, r.source, r.seconds_spent, r.better_answer, r.comment, r.created_at"
        " FROM rankings r"
        " JOIN comparisons c ON c.id = r.comparison_id"
        " JOIN prompts p ON p.id = c.prompt_id"
        " JOIN completions m ON m.comparison_id = c.id"
        " JOIN ranking_ranks rr ON rr.ranking_id = r.id AND rr.completion_id = m.id"
        " GROUP BY ALL ORDER BY r.id"
    ).df()
    frame["messages"] = frame["messages"].map(json.loads)
    return frame
