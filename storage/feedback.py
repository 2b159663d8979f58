"""Rankings and what comes with them: per-completion ranks, labels and ratings."""

from __future__ import annotations

import json

import duckdb
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
    guidelines_version: int | None = None,
    none_acceptable: bool = False,
    checked: bool = False,
) -> int:
    """Store a validated, canonical ranking and one rank per completion (`ranks`: letter
    to 1-based rank), with the guidelines version the annotator worked under and whether
    they found no completion acceptable (the annotation page's context; imports leave them
    out). Raises DuplicateRanking when `annotator` already ranked it. `checked`: the caller
    has reason to expect no ranking of theirs (an open hand-out), so it is not looked up
    first: the table's UNIQUE constraint refuses a second, and DuplicateRanking then says
    so without the first ranking (the transaction is spoilt: roll it back)."""
    existing = None if checked else ranking_by(cur, comparison_id, annotator)
    if existing:
        raise DuplicateRanking(
            f"{annotator} already ranked comparison {comparison_id} as '{existing}'; rankings are never overwritten."
        )
    try:
        ranking_id = cur.execute(
            "INSERT INTO rankings (comparison_id, annotator, source, ranking, seconds_spent, comment, better_answer,"
            " guidelines_version, none_acceptable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [comparison_id, annotator, source, ranking, seconds_spent, comment, better_answer, guidelines_version,
             bool(none_acceptable)],
        ).fetchall()[0][0]
    except duckdb.ConstraintException:
        if not checked:
            raise
        raise DuplicateRanking(f"{annotator} already ranked comparison {comparison_id}; rankings are never "
                               "overwritten.") from None
    # One statement for all K ranks (each statement costs DuckDB ~1 ms on its own), each
    # rank looked up by the letter's position: a join against unnest()ed lists took 3x as long.
    cur.execute(
        "INSERT INTO ranking_ranks (ranking_id, completion_id, rank)"
        " SELECT $ranking, m.id, ($ranks::INTEGER[])[list_position($letters::VARCHAR[], m.letter)]"
        " FROM completions m WHERE m.comparison_id = $comparison AND list_contains($letters::VARCHAR[], m.letter)",
        {"ranking": ranking_id, "comparison": comparison_id, "letters": list(ranks), "ranks": list(ranks.values())},
    )
    return ranking_id


def add_imported_rankings(cur, comparison_ids: list[int], annotators: list[str], ranks: list[dict[str, int]],
                          canonical: list[str], source: str) -> int:
    """Store many validated rankings at once: the i-th by `annotators[i]` on
    `comparison_ids[i]`, its canonical text and one rank per letter. Set-based, for
    imports; the caller has checked that no annotator ranks a comparison twice (the
    table's UNIQUE constraint would refuse the whole statement)."""
    if not comparison_ids:
        return 0
    ids = [row[0] for row in cur.execute(
        "SELECT nextval('ranking_id_seq') FROM range(?)", [len(comparison_ids)]).fetchall()]
    staged = pd.DataFrame({"id": ids, "comparison_id": comparison_ids, "annotator": annotators,
                           "ranking": canonical})
    staged_ranks = pd.DataFrame(
        [(ranking_id, comparison_id, letter, rank)
         for ranking_id, comparison_id, letter_ranks in zip(ids, comparison_ids, ranks)
         for letter, rank in letter_ranks.items()],
        columns=["ranking_id", "comparison_id", "letter", "rank"],
    )
    cur.register("staged_rankings", staged)
    cur.register("staged_ranks", staged_ranks)
    try:
        cur.execute("INSERT INTO rankings (id, comparison_id, annotator, source, ranking)"
                    " SELECT id, comparison_id, annotator, ?, ranking FROM staged_rankings", [source])
        cur.execute("INSERT INTO ranking_ranks (ranking_id, completion_id, rank)"
                    " SELECT r.ranking_id, m.id, r.rank FROM staged_ranks r"
                    " JOIN completions m ON m.comparison_id = r.comparison_id AND m.letter = r.letter")
    finally:
        cur.unregister("staged_rankings")
        cur.unregister("staged_ranks")
    return len(ids)


def ranking_by(cur, comparison_id: int, annotator: str) -> str | None:
    """The ranking `annotator` gave this comparison, if any."""
    row = first_row(cur.execute(
        "SELECT ranking FROM rankings WHERE comparison_id = ? AND annotator = ?", [comparison_id, annotator]
    ))
    return row and row[0]


def count(cur) -> int:
    return cur.execute("SELECT count(*) FROM rankings").fetchall()[0][0]


def rankings_frame(cur, newest: int | None = None) -> pd.DataFrame:
    """Every ranking with its comparison, for exports and training data; with `newest`, only
    the newest that many (highest ids), read by a LIMIT rather than the whole table.

    Columns: ranking_id, comparison_id, round, prompt, messages (list of dicts), completions
    (texts, A first), model_versions (per completion), ranking, ranks, user, source,
    seconds_spent, better_answer, comment, created_at.
    """
    frame = cur.execute(
        "SELECT r.id AS ranking_id, r.comparison_id, c.round, p.prompt_set, p.text AS prompt, p.messages,"
        "       list(m.text ORDER BY m.letter) AS completions,"
        "       list(m.model_version ORDER BY m.letter) AS model_versions,"
        "       r.ranking, list(rr.rank ORDER BY m.letter) AS ranks,"
        "       r.annotator AS user, r.source, r.seconds_spent, r.none_acceptable, r.better_answer, r.comment,"
        "       r.created_at"
        f" FROM {'rankings' if newest is None else '(SELECT * FROM rankings ORDER BY id DESC LIMIT ?)'} r"
        " JOIN comparisons c ON c.id = r.comparison_id"
        " JOIN prompts p ON p.id = c.prompt_id"
        " JOIN completions m ON m.comparison_id = c.id"
        " JOIN ranking_ranks rr ON rr.ranking_id = r.id AND rr.completion_id = m.id"
        " GROUP BY ALL ORDER BY r.id", [] if newest is None else [int(newest)]
    ).df()
    frame["messages"] = frame["messages"].map(json.loads)
    return frame


def labels_frame(cur) -> pd.DataFrame:
    """Explicit good/bad marks: comparison_id, letter, good, user (one row per mark)."""
    return cur.execute(
        "SELECT r.comparison_id, m.letter, l.good, r.annotator AS user"
        " FROM completion_labels l JOIN rankings r ON r.id = l.ranking_id"
        " JOIN completions m ON m.id = l.completion_id WHERE l.good IS NOT NULL ORDER BY r.id, m.letter"
    ).df()


def ratings_frame(cur, dimension: str | None = None) -> pd.DataFrame:
    """Annotators' 1-5 ratings: ranking_id, letter, dimension, score (one row per rated
    completion and dimension); with `dimension`, that dimension's only."""
    where, params = ("WHERE g.dimension = ?", [dimension]) if dimension is not None else ("", [])
    return cur.execute(
        "SELECT g.ranking_id, m.letter, g.dimension, g.score FROM ratings g"
        f" JOIN completions m ON m.id = g.completion_id {where} ORDER BY g.ranking_id, m.letter, g.dimension",
        params,
    ).df()


def rated_dimensions(cur) -> list[str]:
    """The dimensions some completion has a rating on, by name."""
    return [row[0] for row in cur.execute("SELECT DISTINCT dimension FROM ratings ORDER BY dimension").fetchall()]


# -- what comes with a ranking from the annotation page --------------------------------


def add_labels(cur, ranking_id: int, comparison_id: int, labels: dict[str, dict]) -> None:
    """Per-completion marks: {letter: {"good": bool | None, "flag": str | None}}. A letter
    with neither a mark nor a flag says nothing and gets no row."""
    rows = [
        [ranking_id, label.get("good"), label.get("flag"), comparison_id, letter]
        for letter, label in labels.items()
        if label.get("good") is not None or label.get("flag") is not None
    ]
    if rows:
        cur.executemany(
            "INSERT INTO completion_labels (ranking_id, completion_id, good, flag)"
            " SELECT ?, id, ?, ? FROM completions WHERE comparison_id = ? AND letter = ?",
            rows,
        )


def add_ratings(cur, ranking_id: int, comparison_id: int, ratings: dict[str, dict[str, int]]) -> None:
    """Per-completion scores on named dimensions: {letter: {dimension: score}}."""
    rows = [
        [ranking_id, dimension, score, comparison_id, letter]
        for letter, scores in ratings.items()
        for dimension, score in scores.items()
    ]
    if rows:
        cur.executemany(
            "INSERT INTO ratings (ranking_id, completion_id, dimension, score)"
            " SELECT ?, id, ?, ? FROM completions WHERE comparison_id = ? AND letter = ?",
            rows,
        )


def add_skip(cur, comparison_id: int, annotator: str, reason: str) -> None:
    cur.execute(
        "INSERT INTO skips (comparison_id, annotator, reason) VALUES (?, ?, ?)",
        [comparison_id, annotator, reason],
    )


def skip_reason(cur, comparison_id: int, annotator: str) -> str | None:
    """Why `annotator` skipped this comparison, or None if they did not."""
    row = first_row(cur.execute(
        "SELECT reason FROM skips WHERE comparison_id = ? AND annotator = ?", [comparison_id, annotator]
    ))
    return row and row[0]

