"""Training jobs: their spec, state, progress and metrics by step."""

from __future__ import annotations

import json

import pandas as pd

from storage.db import first_row

TERMINAL = ("succeeded", "failed", "cancelled")


def create(cur, kind: str, spec: dict, created_by: str | None) -> int:
    return cur.execute(
        "INSERT INTO jobs (kind, spec, created_by) VALUES (?, ?, ?) RETURNING id",
        [kind, json.dumps(spec), created_by],
    ).fetchall()[0][0]


def set_spec(cur, job_id: int, spec: dict, job_dir: str) -> None:
    cur.execute("UPDATE jobs SET spec = ?, job_dir = ? WHERE id = ?", [json.dumps(spec), job_dir, job_id])


def get(cur, job_id: int) -> dict | None:
    frame = cur.execute("SELECT * FROM jobs WHERE id = ?", [job_id]).df()
    if frame.empty:
        return None
    job = frame.iloc[0].to_dict()
    job["spec"] = json.loads(job["spec"])
    return job


def list_jobs(cur, limit: int | None = None) -> pd.DataFrame:
    """Newest first, with the method, base and output version pulled out of the spec."""
    return cur.execute(
        "SELECT id, kind AS method, status, step, total_steps, spec->>'base' AS base,"
        "       spec->>'reward' AS reward, output_version, error, created_by, created_at, started_at,"
        "       finished_at, job_dir"
        " FROM jobs ORDER BY id DESC" + (" LIMIT ?" if limit is not None else ""),
        [limit] if limit is not None else [],
    ).df()


def next_queued(cur) -> int | None:
    row = first_row(cur.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"))
    return row and row[0]


def ids_with_status(cur, status: str) -> list[int]:
    return [row[0] for row in cur.execute("SELECT id FROM jobs WHERE status = ? ORDER BY id", [status]).fetchall()]


def mark_running(cur, job_id: int) -> bool:
    """Queued -> running; False when the job is no longer queued (cancelled meanwhile)."""
    return bool(cur.execute(
        "UPDATE jobs SET status = 'running', started_at = current_timestamp WHERE id = ? AND status = 'queued'"
        " RETURNING id", [job_id]).fetchall())


def cancel_queued(cur, job_id: int, error: str) -> bool:
    """Queued -> cancelled; False when the runner has started it meanwhile."""
    return bool(cur.execute(
        "UPDATE jobs SET status = 'cancelled', error = ?, finished_at = current_timestamp"
        " WHERE id = ? AND status = 'queued' RETURNING id", [error, job_id]).fetchall())


def set_progress(cur, job_id: int, step: int, total: int | None) -> None:
    cur.execute("UPDATE jobs SET step = ?, total_steps = ? WHERE id = ?", [step, total, job_id])


def add_metrics(cur, job_id: int, rows: list[dict]) -> None:
    """Rows as the worker writes them: {"step": n, name: value, ...}; a later value for
    the same step and name replaces the earlier one."""
    values = [[job_id, int(row["step"]), name, float(value)]
              for row in rows for name, value in row.items() if name != "step"]
    if values:
        cur.executemany("INSERT OR REPLACE INTO job_metrics (job_id, step, name, value) VALUES (?, ?, ?, ?)", values)


def metrics(cur, job_id: int) -> pd.DataFrame:
    """Long format: step, name, value."""
    return cur.execute(
        "SELECT step, name, value FROM job_metrics WHERE job_id = ? ORDER BY step, name", [job_id]
    ).df()


def finish(cur, job_id: int, status: str, error: str | None = None, output_version: str | None = None) -> None:
    if status not in TERMINAL:
        raise ValueError(f"not a final job state: {status}")
    cur.execute(
        "UPDATE jobs SET status = ?, error = ?, output_version = ?, finished_at = current_timestamp WHERE id = ?",
        [status, error, output_version, job_id],
    )
