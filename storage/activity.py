"""Read-only views of annotation activity for the Data tab: who ranked what, when, and
the rank lists that agreement is computed on; counts per round of data collection; plus
the stored consensus orderings. Every view takes the same `Filters`."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from storage import rounds


@dataclass(frozen=True)
class Filters:
    """Empty lists mean no restriction."""

    prompt_sets: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()
    model_versions: tuple[str, ...] = ()
    human_only: bool = True
    rounds: tuple[int, ...] = ()


def _comparison_where(filters: Filters) -> tuple[str, list]:
    """Conditions on comparisons c joined to prompts p (prompt set, model version, round)."""
    return (
        "(len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], p.prompt_set))"
        " AND (len(?::VARCHAR[]) = 0 OR EXISTS (SELECT 1 FROM completions m WHERE m.comparison_id = c.id"
        "      AND list_contains(?::VARCHAR[], m.model_version)))"
        " AND (len(?::INTEGER[]) = 0 OR list_contains(?::INTEGER[], c.round))",
        [list(filters.prompt_sets)] * 2 + [list(filters.model_versions)] * 2 + [[int(r) for r in filters.rounds]] * 2,
    )


def _ranking_where(filters: Filters) -> tuple[str, list]:
    """Conditions on rankings r (annotator, source)."""
    return (
        "(len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], r.annotator)) AND (NOT ? OR r.source = 'human')",
        [list(filters.annotators)] * 2 + [filters.human_only],
    )


def _where(filters: Filters) -> tuple[str, list]:
    """The WHERE clause over rankings r joined to comparisons c and prompts p, and its parameters."""
    on_comparisons, first = _comparison_where(filters)
    on_rankings, second = _ranking_where(filters)
    return f" WHERE {on_comparisons} AND {on_rankings}", first + second


_FROM = " FROM rankings r JOIN comparisons c ON c.id = r.comparison_id JOIN prompts p ON p.id = c.prompt_id"


def recent_rankings(cur, filters: Filters, limit: int = 200) -> pd.DataFrame:
    where, params = _where(filters)
    return cur.execute(
        "SELECT r.id AS ranking_id, r.created_at, r.annotator, r.comparison_id, p.prompt_set, c.round,"
        "       left(p.text, 80) AS prompt, r.ranking, r.seconds_spent, r.guidelines_version"
        + _FROM + where + " ORDER BY r.created_at DESC, r.id DESC LIMIT ?",
        params + [limit],
    ).df()


def counts_per_annotator(cur, filters: Filters) -> pd.DataFrame:
    where, params = _where(filters)
    return cur.execute(
        "SELECT r.annotator, count(*) AS rankings, count(DISTINCT r.comparison_id) AS comparisons,"
        "       round(median(r.seconds_spent), 1) AS median_seconds, min(r.created_at) AS first,"
        "       max(r.created_at) AS last"
        + _FROM + where + " GROUP BY r.annotator ORDER BY rankings DESC, r.annotator",
        params,
    ).df()


def counts_per_day(cur, filters: Filters) -> pd.DataFrame:
    where, params = _where(filters)
    return cur.execute(
        "SELECT strftime(r.created_at, '%Y-%m-%d') AS day, r.annotator, count(*) AS rankings"
        + _FROM + where + " GROUP BY ALL ORDER BY day DESC, r.annotator",
        params,
    ).df()


def rank_lists(cur, filters: Filters) -> pd.DataFrame:
    """One row per ranking: comparison_id, user, rank_list (ranks in letter order)."""
    where, params = _where(filters)
    return cur.execute(
        "SELECT r.comparison_id, r.annotator AS user,"
        "       list(rr.rank ORDER BY m.letter) AS rank_list"
        + _FROM + " JOIN ranking_ranks rr ON rr.ranking_id = r.id JOIN completions m ON m.id = rr.completion_id"
        + where + " GROUP BY r.id, r.comparison_id, r.annotator ORDER BY r.comparison_id, r.annotator",
        params,
    ).df()


def counts_per_round(cur, filters: Filters) -> pd.DataFrame:
    """One row per round: round, active_version (the policy active in it), started_at,
    comparisons (made in it), ranked (of those, ranked at least once) and rankings.
    Comparisons are restricted by prompt set, model version and round; rankings also by
    annotator and source."""
    on_comparisons, first = _comparison_where(filters)
    on_rankings, second = _ranking_where(filters)
    counted = cur.execute(
        "WITH kept AS (SELECT c.id, c.round FROM comparisons c JOIN prompts p ON p.id = c.prompt_id"
        f"              WHERE {on_comparisons}),"
        "     ranked AS (SELECT r.comparison_id, count(*) AS n FROM rankings r"
        f"               WHERE {on_rankings} GROUP BY r.comparison_id)"
        " SELECT k.round, count(*) AS comparisons, count(n.n) AS ranked, coalesce(sum(n.n), 0)::BIGINT AS rankings"
        " FROM kept k LEFT JOIN ranked n ON n.comparison_id = k.id GROUP BY k.round",
        first + second,
    ).df()
    known = rounds.list_rounds(cur)
    if filters.rounds:
        known = known[known["round"].isin([int(r) for r in filters.rounds])]
    frame = known.merge(counted, on="round", how="outer").sort_values("round", ignore_index=True)
    for column in ("comparisons", "ranked", "rankings"):
        frame[column] = frame[column].fillna(0).astype(int)
    frame["round"] = frame["round"].astype(int)
    return frame.rename(columns={"policy": "active_version"})[
        ["round", "active_version", "started_at", "comparisons", "ranked", "rankings"]]


def annotator_names(cur) -> list[str]:
    return [row[0] for row in cur.execute(
        "SELECT DISTINCT annotator FROM rankings WHERE source = 'human' ORDER BY annotator").fetchall()]


def replace_consensus(cur, method: str, rows: pd.DataFrame) -> int:
    """Store `rows` (comparison_id, ranking, annotators) as the method's consensus."""
    cur.execute("DELETE FROM consensus WHERE method = ?", [method])
    cur.register("staged_consensus", rows)
    try:
        cur.execute(
            "INSERT INTO consensus (comparison_id, method, ranking, annotators)"
            " SELECT comparison_id, ?, ranking, annotators FROM staged_consensus",
            [method],
        )
    finally:
        cur.unregister("staged_consensus")
    return len(rows)


def consensus_rankings(cur, method: str) -> pd.DataFrame:
    return cur.execute(
        "SELECT k.comparison_id, left(p.text, 80) AS prompt, k.ranking AS consensus, k.annotators,"
        "       (SELECT string_agg(r.annotator || ': ' || r.ranking, '; ' ORDER BY r.annotator)"
        "        FROM rankings r WHERE r.comparison_id = k.comparison_id AND r.source = 'human') AS rankings"
        " FROM consensus k JOIN comparisons c ON c.id = k.comparison_id JOIN prompts p ON p.id = c.prompt_id"
        " WHERE k.method = ? ORDER BY k.comparison_id",
        [method],
    ).df()
