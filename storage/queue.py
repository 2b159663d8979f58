"""The annotation queue: which comparison an annotator gets next, claims on handed-out
comparisons, the hand-outs clients rank and skip by, gold items, and the JSON settings
the queue is configured by.

A comparison has `overlap` slots: that many different annotators should rank it. A slot
is used by a ranking (any source but 'simulated': simulated annotators are for demos and
must not starve people of work) or by a live claim, one not older than the claim TTL.
Skips use no slot: whoever skipped is simply never offered that comparison again.

Claim times are given by the caller (`now`, naive local time) rather than read from the
database's clock, so that a claim's age is measured with one clock and tests can move it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from storage import scores
from storage.db import first_row

if TYPE_CHECKING:
    from storage.comparisons import NewCompletion

# Comparisons with a free slot for `me` ($me NULL: for anyone), restricted to prompt sets
# and to a generating model version when those are given (`_open_slots`). `mine` marks
# the annotator's own live claim; `rankings` is how close the comparison is to complete.
# Written with grouped joins and uncorrelated IN lists rather than correlated EXISTS
# subqueries: DuckDB's cost here is planning, not rows, and the correlated form took
# twice as long (10 against 4-5 ms on the load benchmark's home).
_OPEN_SLOTS = """
WITH ranked AS (
    SELECT comparison_id, count(*) FILTER (WHERE source <> 'simulated') AS n, bool_or(annotator = $me) AS by_me
    FROM rankings GROUP BY comparison_id
), held AS (
    SELECT comparison_id, count(*) FILTER (WHERE annotator IS DISTINCT FROM $me) AS n, bool_or(annotator = $me) AS mine
    FROM claims WHERE claimed_at > $cutoff GROUP BY comparison_id
)
SELECT c.id, c.created_at, coalesce(r.n, 0) AS rankings, coalesce(h.mine, false) AS mine
FROM comparisons c
LEFT JOIN ranked r ON r.comparison_id = c.id
LEFT JOIN held h ON h.comparison_id = c.id{join}
WHERE coalesce(r.n, 0) + coalesce(h.n, 0) < $overlap
  AND NOT coalesce(r.by_me, false)
  AND c.id NOT IN (SELECT comparison_id FROM skips WHERE annotator = $me){where}
"""


def _open_slots(annotator, overlap, prompt_sets, model_version, claim_ttl_s, now) -> tuple[str, dict]:
    """The open-slots query and its parameters, with only the filters that are set (a
    filter written as `$x IS NULL OR ...` is still planned, and costs, when it is off)."""
    now = now or datetime.now()
    params = {"me": annotator, "overlap": overlap, "cutoff": now - timedelta(seconds=claim_ttl_s)}
    join = where = ""
    if prompt_sets is not None:
        join = "\nJOIN prompts p ON p.id = c.prompt_id"
        where += "\n  AND list_contains($prompt_sets, p.prompt_set)"
        params["prompt_sets"] = list(prompt_sets)
    if model_version is not None:
        where += "\n  AND c.id IN (SELECT comparison_id FROM completions WHERE model_version = $model_version)"
        params["model_version"] = model_version
    return _OPEN_SLOTS.format(join=join, where=where), params


# -- settings ----------------------------------------------------------------------------


def get_setting(cur, key: str, default=None):
    """The JSON value stored under `key`, decoded; `default` when there is none."""
    row = first_row(cur.execute("SELECT value FROM settings WHERE key = ?", [key]))
    return json.loads(row[0]) if row else default


def set_setting(cur, key: str, value) -> None:
    cur.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, json.dumps(value)],
    )


# -- handing out comparisons --------------------------------------------------------------


class Claimed(NamedTuple):
    comparison_id: int
    open_for_me: int  # comparisons with a free slot for this annotator, the claimed one included


def next_for(
    cur,
    annotator: str,
    overlap: int,
    prompt_sets: list[str] | None,
    model_version: str | None,
    claim_ttl_s: int,
    now: datetime | None = None,
    uncertain_by: list[str] | None = None,
) -> Claimed | None:
    """Claim the next comparison for `annotator`; None when there is none. Their own live
    claim comes first (a reloaded page resumes the same item), then the comparisons closest
    to complete (so finished data arrives early), then the oldest. The same query counts
    what is open for them (their progress figure), which would otherwise cost a second pass
    over every ranking and claim.

    With `uncertain_by` (one or two reward versions), the comparisons the reward model is
    least sure about come right after the annotator's own claim: with one version, the
    smallest gap between two of the comparison's scores first; with two,
    the largest share of completion pairs the two order differently first, then the first
    one's smallest gap (`scores.uncertainty_sql`). Comparisons not scored yet (completely)
    come after every scored one, in the usual order.

    Call inside a transaction, under the caller's lock: choosing and claiming belong together."""
    open_slots, params = _open_slots(annotator, overlap, prompt_sets, model_version, claim_ttl_s, now)
    cur.execute("DELETE FROM claims WHERE claimed_at <= $cutoff", {"cutoff": params["cutoff"]})
    if uncertain_by:
        # the scores of the open comparisons only: the queue is short, the scored history long
        uncertainty, extra = scores.uncertainty_sql(list(uncertain_by), candidates="open_now")
        row = first_row(cur.execute(
            f"WITH open_now AS MATERIALIZED ({open_slots})"
            " SELECT o.id, count(*) OVER (), o.mine FROM open_now o"
            f" LEFT JOIN ({uncertainty}) u ON u.comparison_id = o.id"
            " ORDER BY o.mine DESC, u.comparison_id IS NULL, u.disagreement DESC NULLS LAST, u.gap NULLS LAST,"
            " o.rankings DESC, o.created_at, o.id LIMIT 1",
            params | extra,
        ))
    else:
        row = first_row(cur.execute(
            f"SELECT id, count(*) OVER (), mine FROM ({open_slots})"
            " ORDER BY mine DESC, rankings DESC, created_at, id LIMIT 1", params
        ))
    if row is None:
        return None
    # their own live claim is refreshed; any other row is new, the expired ones just deleted
    claim(cur, row[0], annotator, now, held=row[2])
    return Claimed(row[0], row[1])


def without_suggestion(
    cur,
    reward_version: str,
    overlap: int,
    prompt_sets: list[str] | None,
    model_version: str | None,
    claim_ttl_s: int = 900,
    limit: int = 16,
    now: datetime | None = None,
) -> list[int]:
    """Comparisons the queue may still hand out (a free slot for someone, or a gold item)
    that `reward_version` has made no suggestion for yet, oldest first; at most `limit`."""
    open_slots, params = _open_slots(None, overlap, prompt_sets, model_version, claim_ttl_s, now)
    params |= {"reward_version": reward_version, "limit": int(limit)}
    return [row[0] for row in cur.execute(
        f"WITH open AS ({open_slots} UNION SELECT c.id, c.created_at, 0, false FROM comparisons c"
        "                WHERE c.gold_ranking IS NOT NULL)"
        " SELECT o.id FROM open o WHERE NOT EXISTS (SELECT 1 FROM suggestions s"
        "     WHERE s.comparison_id = o.id AND s.reward_version = $reward_version)"
        " ORDER BY o.created_at, o.id LIMIT $limit",
        params,
    ).fetchall()]


def own_claim(cur, annotator: str, claim_ttl_s: int, now: datetime | None = None) -> int | None:
    """The comparison `annotator` holds a live claim on and has not ranked or skipped yet."""
    cutoff = (now or datetime.now()) - timedelta(seconds=claim_ttl_s)
    row = first_row(cur.execute(  # uncorrelated IN lists: DuckDB plans them in half the time of NOT EXISTS
        "SELECT comparison_id FROM claims WHERE annotator = $me AND claimed_at > $cutoff"
        " AND comparison_id NOT IN (SELECT comparison_id FROM rankings WHERE annotator = $me)"
        " AND comparison_id NOT IN (SELECT comparison_id FROM skips WHERE annotator = $me)"
        " ORDER BY claimed_at DESC LIMIT 1",
        {"me": annotator, "cutoff": cutoff},
    ))
    return row and row[0]


def claim(cur, comparison_id: int, annotator: str, now: datetime | None = None, held: bool | None = None) -> None:
    """Hand `comparison_id` to `annotator`, or refresh the time of their claim on it.
    `held`, when the caller knows: True, they hold a claim on it (refreshed by an UPDATE);
    False, they hold none (a plain INSERT). DuckDB's `INSERT ... ON CONFLICT`, for when it
    is not known, costs four times either (~2 against ~0.5 ms)."""
    row = [now or datetime.now(), comparison_id, annotator]
    if held:
        cur.execute("UPDATE claims SET claimed_at = ? WHERE comparison_id = ? AND annotator = ?", row)
    elif held is False:
        cur.execute("INSERT INTO claims (claimed_at, comparison_id, annotator) VALUES (?, ?, ?)", row)
    else:
        cur.execute("INSERT INTO claims (claimed_at, comparison_id, annotator) VALUES (?, ?, ?)"
                    " ON CONFLICT (comparison_id, annotator) DO UPDATE SET claimed_at = excluded.claimed_at", row)


def release(cur, comparison_id: int, annotator: str) -> None:
    """Give the annotator's slot on this comparison back (done with it, or skipped)."""
    cur.execute("DELETE FROM claims WHERE comparison_id = ? AND annotator = ?", [comparison_id, annotator])


def ready_count(
    cur,
    overlap: int,
    prompt_sets: list[str] | None,
    model_version: str | None,
    claim_ttl_s: int = 900,
    now: datetime | None = None,
) -> int:
    """How many comparisons still have a free slot for someone."""
    open_slots, params = _open_slots(None, overlap, prompt_sets, model_version, claim_ttl_s, now)
    return cur.execute(f"SELECT count(*) FROM ({open_slots})", params).fetchall()[0][0]


def done_counts(cur, annotator: str) -> dict:
    """{done_today, done_total, skipped} for one annotator, in one query; 'today' is the
    database's calendar day, the one its created_at defaults are written in."""
    done_today, done_total, skipped = cur.execute(
        "SELECT count(*) FILTER (WHERE created_at >= CAST(current_date AS TIMESTAMP)), count(*),"
        " (SELECT count(*) FROM skips WHERE annotator = $me) FROM rankings WHERE annotator = $me",
        {"me": annotator},
    ).fetchall()[0]
    return {"done_today": done_today, "done_total": done_total, "skipped": skipped}


def progress(
    cur,
    annotator: str,
    overlap: int = 1,
    prompt_sets: list[str] | None = None,
    model_version: str | None = None,
    claim_ttl_s: int = 900,
    now: datetime | None = None,
) -> dict:
    """{done_today, done_total, skipped, remaining_for_me} for one annotator."""
    open_slots, params = _open_slots(annotator, overlap, prompt_sets, model_version, claim_ttl_s, now)
    remaining = cur.execute(f"SELECT count(*) FROM ({open_slots})", params).fetchall()[0][0]
    return {**done_counts(cur, annotator), "remaining_for_me": remaining}


# -- hand-outs: what a client may rank or skip ----------------------------------------------


@dataclass(frozen=True)
class Handout:
    token: str
    comparison_id: int
    annotator: str
    handed_at: datetime
    k: int  # the comparison's number of completions: what a ranking of it is checked against
    closed: bool = False  # ranked or skipped (`close_handout`); an open one is neither, unless ranked another way


_HANDOUT_COLUMNS = "h.token, h.comparison_id, h.annotator, h.handed_at, c.k, h.closed_at IS NOT NULL"
_HANDOUTS = "handouts h JOIN comparisons c ON c.id = h.comparison_id"


def _handout(row) -> Handout | None:
    return Handout(*row) if row else None


def handout_by_token(cur, token: str) -> Handout | None:
    return _handout(first_row(cur.execute(f"SELECT {_HANDOUT_COLUMNS} FROM {_HANDOUTS} WHERE h.token = ?", [token])))


def hand_out(cur, comparison_id: int, annotator: str, token: str, fresh: bool, now: datetime | None = None) -> str:
    """Record that `comparison_id` is handed to `annotator` and return the token the client
    holds for it: `token` for a first hand-out, the existing one otherwise. `fresh` (a new
    hand-out, not a reload of the item they hold) restarts the clock the time spent is
    measured by. Call in the transaction that claims the comparison."""
    # a look-up, then an INSERT (a first hand-out) or an UPDATE (a fresh one of an item handed
    # out before) or nothing (a reload): DuckDB's INSERT ... ON CONFLICT costs more than both
    now = now or datetime.now()
    row = first_row(cur.execute("SELECT token FROM handouts WHERE comparison_id = ? AND annotator = ?",
                                [comparison_id, annotator]))
    if row is None:
        cur.execute("INSERT INTO handouts (token, comparison_id, annotator, handed_at) VALUES (?, ?, ?, ?)",
                    [token, comparison_id, annotator, now])
        return token
    if fresh:
        cur.execute("UPDATE handouts SET handed_at = ? WHERE token = ?", [now, row[0]])
    return row[0]


def close_handout(cur, token: str, client_seconds: float | None = None, now: datetime | None = None) -> bool:
    """The item was ranked or skipped: its token names nothing open any more. Returns
    whether it was open until now (False: it had been closed already, and stays as it was)."""
    return bool(cur.execute("UPDATE handouts SET closed_at = ?, client_seconds = ? WHERE token = ? AND closed_at IS NULL"
                            " RETURNING token", [now or datetime.now(), client_seconds, token]).fetchall())


# -- gold items ---------------------------------------------------------------------------


def set_gold(cur, comparison_id: int, canonical_ranking: str | None) -> None:
    """Mark a comparison as a gold item with its expected (canonical) ranking, or unmark it."""
    cur.execute("UPDATE comparisons SET gold_ranking = ? WHERE id = ?", [canonical_ranking, comparison_id])


def gold_ids(cur) -> list[int]:
    return [row[0] for row in cur.execute(
        "SELECT id FROM comparisons WHERE gold_ranking IS NOT NULL ORDER BY id").fetchall()]


def gold_for(cur, annotator: str) -> list[int]:
    """The gold comparisons `annotator` has neither ranked nor skipped (by id; the caller
    picks one at random, so that gold items do not come in the order they were made).
    Gold items ignore the overlap: their point is that everybody does them."""
    return [row[0] for row in cur.execute(
        "SELECT c.id FROM comparisons c WHERE c.gold_ranking IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM rankings r WHERE r.comparison_id = c.id AND r.annotator = ?)"
        " AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.comparison_id = c.id AND s.annotator = ?)"
        " ORDER BY c.id",
        [annotator, annotator],
    ).fetchall()]


def is_gold(cur, comparison_id: int) -> bool:
    row = first_row(cur.execute("SELECT gold_ranking IS NOT NULL FROM comparisons WHERE id = ?", [comparison_id]))
    return bool(row and row[0])


def gold_agreement(cur) -> pd.DataFrame:
    """Per annotator: how many gold items they ranked and how many exactly as expected."""
    return cur.execute(
        "SELECT r.annotator, count(*) AS gold_items,"
        "       count(*) FILTER (WHERE r.ranking = c.gold_ranking) AS exact_matches"
        " FROM rankings r JOIN comparisons c ON c.id = r.comparison_id"
        " WHERE c.gold_ranking IS NOT NULL AND r.source = 'human'"
        " GROUP BY r.annotator ORDER BY r.annotator"
    ).df()


def add_unshown(cur, comparison_id: int, candidates: list[tuple[int, NewCompletion]], chosen_by: str) -> None:
    """Keep the candidates a selection did not show: (position among the M sampled, the
    completion) each, beside the comparison made of the shown ones."""
    cur.executemany(
        "INSERT INTO unshown_completions (comparison_id, position, text, model_version, sampling, num_tokens,"
        " finish_reason, chosen_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [[comparison_id, position, c.text, c.model_version, json.dumps(c.sampling) if c.sampling is not None else None,
          c.num_tokens, c.finish_reason, chosen_by] for position, c in candidates],
    )


def unshown(cur, comparison_id: int) -> pd.DataFrame:
    """The candidates of a comparison that were not shown, in sampled order: position,
    text, model_version, sampling (JSON text), num_tokens, finish_reason, chosen_by."""
    return cur.execute(
        "SELECT position, text, model_version, sampling, num_tokens, finish_reason, chosen_by"
        " FROM unshown_completions WHERE comparison_id = ? ORDER BY position", [comparison_id]).df()
