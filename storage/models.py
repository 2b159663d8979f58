"""Model versions: policies and reward models with their lineage."""

from __future__ import annotations

import json

import pandas as pd

from storage import rounds
from storage.db import first_row


def register(
    cur,
    name: str,
    kind: str,
    base_model: str,
    path: str,
    method: str,
    parent: str | None = None,
    job_id: int | None = None,
    data_snapshot: str | None = None,
    status: str = "candidate",
    metrics: dict | None = None,
) -> None:
    cur.execute(
        "INSERT INTO model_versions (name, kind, base_model, parent, method, job_id, data_snapshot,"
        " path, status, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [name, kind, base_model, parent, method, job_id, data_snapshot, path, status,
         json.dumps(metrics) if metrics is not None else None],
    )


def get(cur, name: str) -> dict | None:
    frame = cur.execute("SELECT * FROM model_versions WHERE name = ?", [name]).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def names(cur) -> list[str]:
    return [row[0] for row in cur.execute("SELECT name FROM model_versions ORDER BY created_at").fetchall()]


def active_policy(cur) -> str | None:
    row = first_row(cur.execute(
        "SELECT name FROM model_versions WHERE kind = 'policy' AND status = 'active'"
    ))
    return row and row[0]


def promote(cur, name: str) -> int:
    """Make `name` the active policy; the previously active one is archived, and the next
    round of data collection begins with `name` (none when it was already active).
    Returns the current round's number. Call inside a transaction: the statuses and the
    round change together."""
    previous = active_policy(cur)
    cur.execute(
        "UPDATE model_versions SET status = 'archived' WHERE kind = 'policy' AND status = 'active' AND name <> ?",
        [name],
    )
    cur.execute("UPDATE model_versions SET status = 'active' WHERE name = ?", [name])
    return rounds.start(cur, name, previous)


def list_versions(cur) -> pd.DataFrame:
    """Every version with its lineage and how much the store holds about it."""
    return cur.execute(
        "SELECT v.name, v.kind, v.status, v.parent, v.method, v.base_model, v.job_id,"
        "       v.data_snapshot, v.path, v.metrics, v.created_at,"
        "       (SELECT count(*) FROM completions c WHERE c.model_version = v.name) AS completions"
        " FROM model_versions v ORDER BY v.created_at, v.name"
    ).df()
