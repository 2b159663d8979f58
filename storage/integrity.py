"""Checks that the stored annotations hold together: what a load test or an operator
asks after a crash. Each figure should be zero in a healthy store (`stored` aside)."""

from __future__ import annotations

# Human rankings only: imported and simulated rankings are not handed out, so no queue
# rule (overlap, one ranking per person) applies to them.
_FIGURES = """
WITH human AS (SELECT * FROM rankings WHERE source = 'human'),
per_person AS (
    SELECT comparison_id, annotator, count(*) AS n FROM human GROUP BY ALL
), per_comparison AS (
    SELECT comparison_id, count(DISTINCT annotator) AS people FROM human GROUP BY ALL
), ranks_per_ranking AS (
    SELECT h.id, c.k, count(rr.completion_id) AS ranked
    FROM human h JOIN comparisons c ON c.id = h.comparison_id
    LEFT JOIN ranking_ranks rr ON rr.ranking_id = h.id
    GROUP BY ALL
)
SELECT
    (SELECT count(*) FROM human) AS stored,
    (SELECT coalesce(sum(n - 1), 0) FROM per_person WHERE n > 1) AS duplicates,
    (SELECT count(*) FROM per_comparison WHERE people > $overlap) AS over_overlap,
    (SELECT count(*) FROM ranks_per_ranking WHERE ranked <> k) AS without_ranks
"""


def ranking_figures(cur, overlap: int) -> dict[str, int]:
    """stored human rankings; duplicates (a second ranking by one person of one
    comparison); comparisons ranked by more people than `overlap`; rankings whose
    per-completion ranks are missing or incomplete."""
    row = cur.execute(_FIGURES, {"overlap": overlap}).fetchall()[0]
    return dict(zip(("stored", "duplicates", "over_overlap", "without_ranks"), (int(v) for v in row)))


def human_ranking_ids(cur) -> set[int]:
    return {row[0] for row in cur.execute("SELECT id FROM rankings WHERE source = 'human'").fetchall()}
