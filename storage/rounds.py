"""Rounds of data collection: round N is the time during which one policy version was
the active one, and every comparison records the round it was made in.

Promoting a policy (`storage.models.promote`) starts the next round, in the caller's
transaction. Round 1 is written down lazily: a new store has no row until its first
promotion, and until then round 1 is simply "the active policy" (a store upgraded from
an older release got its round-1 row from migration 004).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from storage.db import first_row


@dataclass(frozen=True)
class Round:
    number: int
    policy: str | None  # the active policy of the round; None only in a store with no active policy
    started_at: datetime | None  # None for a round 1 not written down yet


def _active_policy(cur) -> str | None:
    row = first_row(cur.execute(
        "SELECT name FROM model_versions WHERE kind = 'policy' AND status = 'active' ORDER BY created_at LIMIT 1"))
    return row and row[0]


def current(cur) -> Round:
    """The round new comparisons belong to."""
    row = first_row(cur.execute("SELECT round, policy, started_at FROM rounds ORDER BY round DESC LIMIT 1"))
    if row is None:
        return Round(1, _active_policy(cur), None)
    return Round(*row)


def get(cur, number: int) -> Round | None:
    row = first_row(cur.execute("SELECT round, policy, started_at FROM rounds WHERE round = ?", [number]))
    if row is not None:
        return Round(*row)
    if number == 1 and first_row(cur.execute("SELECT 1 FROM rounds LIMIT 1")) is None:
        return current(cur)
    return None


def previous_policy(cur) -> str | None:
    """The active policy of the round before the current one; None in round 1."""
    now = current(cur)
    before = get(cur, now.number - 1) if now.number > 1 else None
    return before.policy if before else None


def start(cur, policy: str, previous: str | None) -> int:
    """Begin the next round with `policy` (just made active; `previous` was active before
    it) and return its number. Call inside the promotion's transaction. Promoting the
    policy that is already active starts nothing and returns the current round."""
    latest = first_row(cur.execute("SELECT round, policy FROM rounds ORDER BY round DESC LIMIT 1"))
    if latest is None:
        if previous == policy:
            return 1
        if previous is not None:  # write down the round 1 that was only implied so far
            cur.execute(
                "INSERT INTO rounds (round, policy, started_at)"
                " SELECT 1, name, least(created_at, coalesce((SELECT min(created_at) FROM comparisons), created_at))"
                " FROM model_versions WHERE name = ?",
                [previous],
            )
    elif latest[1] == policy:
        return latest[0]
    number = cur.execute(
        "SELECT greatest(coalesce((SELECT max(round) FROM rounds), 0),"
        " coalesce((SELECT max(round) FROM comparisons), 0)) + 1"
    ).fetchall()[0][0]
    cur.execute("INSERT INTO rounds (round, policy) VALUES (?, ?)", [number, policy])
    return number


def list_rounds(cur) -> pd.DataFrame:
    """round, policy, started_at for every round, oldest first, including a round that
    comparisons name but that was never written down (a new store's implied round 1)."""
    frame = cur.execute(
        "WITH named AS (SELECT DISTINCT round FROM comparisons UNION SELECT round FROM rounds)"
        " SELECT n.round, r.policy, r.started_at FROM named n LEFT JOIN rounds r ON r.round = n.round"
        " ORDER BY n.round"
    ).df()
    if frame.empty:  # a new store: round 1 has begun, nothing is in it yet
        frame = pd.DataFrame({"round": [1], "policy": [None], "started_at": [pd.NaT]})
    if first_row(cur.execute("SELECT 1 FROM rounds LIMIT 1")) is None:
        frame.loc[frame["round"] == 1, "policy"] = _active_policy(cur)
    frame["round"] = frame["round"].astype(int)
    return frame
