"""Reward-model scores of completions, the suggestions made from them, and the
suggestions annotators were shown (migration 006).

A score is one reward version's normalised reward of one completion; a version's score
of a completion never changes, so rows are written once and never replaced. A suggestion
is the ranking a reward version gives a comparison, kept with the scores it came from.
`suggestions_shown` records, per annotator and comparison, the suggestion on their page
when they ranked it, so agreement with the suggestion is measured against what they saw.
"""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from storage.db import first_row

# Two reward-model scores closer than this are "scored equal": the model ties them. The one
# definition (the SQL below needs it; suggestions, the reward audit, evaluations import it).
EQUAL_SCORE = 1e-6


# -- reward versions ------------------------------------------------------------------------


def reward_versions(cur) -> list[str]:
    """The reward model versions, newest first."""
    return [row[0] for row in cur.execute(
        "SELECT name FROM model_versions WHERE kind = 'reward' ORDER BY created_at DESC, name DESC").fetchall()]


def newest_reward(cur) -> str | None:
    versions = reward_versions(cur)
    return versions[0] if versions else None


# -- scores ---------------------------------------------------------------------------------


def add_scores(cur, reward_version: str, scores: dict[int, float]) -> int:
    """Store {completion_id: score} for one reward version; completions it already scored
    keep their score. Returns how many rows were offered."""
    if not scores:
        return 0
    cur.executemany(
        "INSERT INTO completion_scores (completion_id, reward_version, score) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        [[int(completion_id), reward_version, float(score)] for completion_id, score in scores.items()],
    )
    return len(scores)


def scores_frame(cur, reward_version: str, comparison_ids: list[int] | None = None) -> pd.DataFrame:
    """One row per scored completion: comparison_id, letter, completion_id, score (of the
    named comparisons, or of all)."""
    return cur.execute(
        "SELECT m.comparison_id, m.letter, m.id AS completion_id, s.score"
        " FROM completion_scores s JOIN completions m ON m.id = s.completion_id"
        " WHERE s.reward_version = ? AND (?::BIGINT[] IS NULL OR list_contains(?::BIGINT[], m.comparison_id))"
        " ORDER BY m.comparison_id, m.letter",
        [reward_version, *[None if comparison_ids is None else [int(i) for i in comparison_ids]] * 2],
    ).df()


def with_suggestion(cur, reward_version: str, comparison_ids: list[int]) -> set[int]:
    """Those of `comparison_ids` that `reward_version` has scored (and made a suggestion for)."""
    if not comparison_ids:
        return set()
    return {row[0] for row in cur.execute(
        "SELECT comparison_id FROM suggestions WHERE reward_version = ? AND list_contains(?::BIGINT[], comparison_id)",
        [reward_version, [int(i) for i in comparison_ids]],
    ).fetchall()}


def rank_lists(cur, sources: tuple[str, ...] = ("human",)) -> pd.DataFrame:
    """One row per ranking from the given sources: comparison_id, user, rank_list (ranks in
    letter order), created_at."""
    return cur.execute(
        "SELECT r.comparison_id, r.annotator AS user, list(rr.rank ORDER BY m.letter) AS rank_list, r.created_at"
        " FROM rankings r JOIN ranking_ranks rr ON rr.ranking_id = r.id JOIN completions m ON m.id = rr.completion_id"
        " WHERE list_contains(?::VARCHAR[], r.source)"
        " GROUP BY r.id, r.comparison_id, r.annotator, r.created_at ORDER BY r.comparison_id, r.annotator",
        [list(sources)],
    ).df()


# -- suggestions ----------------------------------------------------------------------------


def add_suggestion(cur, comparison_id: int, reward_version: str, ranking: str, scores: dict[str, float]) -> None:
    """Store the ranking `reward_version` suggests for a comparison ({letter: score} with
    it); one made before for the same version stays."""
    cur.execute(
        "INSERT INTO suggestions (comparison_id, reward_version, ranking, scores) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        [int(comparison_id), reward_version, ranking, json.dumps(scores)],
    )


def suggestion(cur, comparison_id: int, reward_version: str) -> dict | None:
    """{ranking, scores, reward_version} of a stored suggestion, or None."""
    row = first_row(cur.execute(
        "SELECT ranking, scores FROM suggestions WHERE comparison_id = ? AND reward_version = ?",
        [int(comparison_id), reward_version],
    ))
    if row is None:
        return None
    return {"ranking": row[0], "scores": json.loads(row[1]), "reward_version": reward_version}


def suggestions_frame(cur, reward_version: str | None = None) -> pd.DataFrame:
    """comparison_id, reward_version, ranking of the stored suggestions (of one version, or all)."""
    return cur.execute(
        "SELECT comparison_id, reward_version, ranking FROM suggestions"
        " WHERE ?::VARCHAR IS NULL OR reward_version = ? ORDER BY comparison_id, reward_version",
        [reward_version, reward_version],
    ).df()


def record_shown(cur, comparison_id: int, annotator: str, reward_version: str, ranking: str,
                 now: datetime | None = None) -> None:
    """Remember that `annotator` was shown this suggestion with this comparison (replacing
    one shown before: a reloaded page may show a newer model's)."""
    cur.execute(
        "INSERT INTO suggestions_shown (comparison_id, annotator, reward_version, ranking, shown_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (comparison_id, annotator) DO UPDATE SET"
        " reward_version = excluded.reward_version, ranking = excluded.ranking, shown_at = excluded.shown_at",
        [int(comparison_id), annotator, reward_version, ranking, now or datetime.now()],
    )


def shown_frame(cur) -> pd.DataFrame:
    """comparison_id, user, reward_version, suggested (canonical ranking) of every
    suggestion shown."""
    return cur.execute(
        "SELECT comparison_id, annotator AS user, reward_version, ranking AS suggested FROM suggestions_shown"
        " ORDER BY comparison_id, annotator"
    ).df()


# -- uncertainty, for the queue -------------------------------------------------------------

# Per comparison among {candidates} (a relation with an `id` column: comparisons, or the
# queue's open ones) that `$first_reward` scored completely: the smallest gap between two
# of its completions' scores (adjacent in score order): how close the model came to a tie
# on its least certain pair.
_GAPS = """
SELECT comparison_id, min(gap) AS gap FROM (
    SELECT m.comparison_id, c.k,
           s.score - lag(s.score) OVER (PARTITION BY m.comparison_id ORDER BY s.score) AS gap,
           count(*) OVER (PARTITION BY m.comparison_id) AS scored
    FROM {candidates} o JOIN comparisons c ON c.id = o.id JOIN completions m ON m.comparison_id = c.id
    JOIN completion_scores s ON s.completion_id = m.id AND s.reward_version = $first_reward
) WHERE scored = k GROUP BY comparison_id
"""

_RELATION = f"CASE WHEN abs({{0}}) < {EQUAL_SCORE} THEN 0 ELSE sign({{0}}) END"

# Per comparison among {candidates} that both versions scored completely: the share of
# completion pairs that `$first_reward` and `$second_reward` order differently (better,
# tied or worse, as in rlhf.preference.agreement.pairwise_agreement), and the first one's smallest gap.
_DISAGREEMENT = f"""
SELECT p.comparison_id, p.disagreement, g.gap FROM (
    SELECT x.comparison_id, any_value(x.k) AS k, count(*) AS n,
           avg(CASE WHEN {_RELATION.format('x.first - y.first')} = {_RELATION.format('x.second - y.second')}
                    THEN 0.0 ELSE 1.0 END) AS disagreement
    FROM both_scores x JOIN both_scores y ON y.comparison_id = x.comparison_id AND x.letter < y.letter
    GROUP BY x.comparison_id
) p LEFT JOIN ({_GAPS}) g ON g.comparison_id = p.comparison_id
WHERE p.n = p.k * (p.k - 1) / 2
"""

_BOTH_SCORES = """
    SELECT m.comparison_id, m.letter, c.k, a.score AS first, b.score AS second
    FROM {candidates} o JOIN comparisons c ON c.id = o.id JOIN completions m ON m.comparison_id = c.id
    JOIN completion_scores a ON a.completion_id = m.id AND a.reward_version = $first_reward
    JOIN completion_scores b ON b.completion_id = m.id AND b.reward_version = $second_reward
"""


def uncertainty_sql(reward_versions: list[str], candidates: str = "comparisons") -> tuple[str, dict]:
    """A query giving (comparison_id, disagreement, gap) for one or two reward versions over
    the comparisons of the relation `candidates` (a table or CTE name with an `id` column),
    and its parameters. With one version, disagreement is NULL."""
    if len(reward_versions) == 1:
        return (f"SELECT comparison_id, NULL::DOUBLE AS disagreement, gap FROM ({_GAPS.format(candidates=candidates)})",
                {"first_reward": reward_versions[0]})
    first, second = reward_versions[:2]
    both = f"both_scores AS ({_BOTH_SCORES.format(candidates=candidates)})"
    return (f"WITH {both} {_DISAGREEMENT.format(candidates=candidates)}",
            {"first_reward": first, "second_reward": second})


def uncertainty_frame(cur, first_reward: str, second_reward: str | None = None) -> pd.DataFrame:
    """comparison_id, disagreement (NaN with one version), gap, for every comparison the
    version(s) scored completely: what the 'uncertain' queue order sorts by."""
    sql, params = uncertainty_sql([first_reward, second_reward] if second_reward else [first_reward])
    frame = cur.execute(sql + " ORDER BY comparison_id", params).df()
    frame["disagreement"] = frame["disagreement"].astype(float)
    return frame
