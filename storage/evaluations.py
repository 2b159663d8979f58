"""Automatic evaluations: one policy version against another on a prompt set, with the
figures (`metrics`) that `rlhf.compare.evaluate` measured."""

from __future__ import annotations

import json

import pandas as pd

EVALUATION_COLUMNS = ["id", "version_a", "version_b", "reward_version", "prompt_set", "n", "metrics",
                      "created_by", "created_at"]


def add(cur, version_a: str, version_b: str, reward_version: str | None, prompt_set: str | None, n: int,
        metrics: dict, created_by: str | None = None) -> int:
    """Store one evaluation; returns its id. `metrics` must be JSON-serialisable (NaN is
    stored as null)."""
    return cur.execute(
        "INSERT INTO evaluations (version_a, version_b, reward_version, prompt_set, n, metrics, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [version_a, version_b, reward_version, prompt_set, int(n), json.dumps(_finite(metrics)), created_by],
    ).fetchall()[0][0]


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _parsed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["metrics"] = frame["metrics"].map(lambda text: json.loads(text) if isinstance(text, str) else {})
    return frame


def get(cur, evaluation_id: int) -> dict | None:
    frame = _parsed(cur.execute(f"SELECT {', '.join(EVALUATION_COLUMNS)} FROM evaluations WHERE id = ?",
                                [evaluation_id]).df())
    return None if frame.empty else frame.iloc[0].to_dict()


def list_evaluations(cur, version: str | None = None, limit: int | None = None) -> pd.DataFrame:
    """Evaluations, newest first (columns `EVALUATION_COLUMNS`, metrics as dicts); with
    `version`, those where it is either side."""
    where, params = "", []
    if version is not None:
        where, params = " WHERE version_a = ? OR version_b = ?", [version, version]
    limit_sql = ""
    if limit is not None:
        limit_sql, params = " LIMIT ?", [*params, int(limit)]
    return _parsed(cur.execute(
        f"SELECT {', '.join(EVALUATION_COLUMNS)} FROM evaluations{where} ORDER BY id DESC{limit_sql}", params).df())


def count(cur) -> int:
    return cur.execute("SELECT count(*) FROM evaluations").fetchall()[0][0]
