"""Comparisons: one prompt with K completions shown together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class NewCompletion:
    text: str
    model_version: str | None
    sampling: dict | None = None
    num_tokens: int | None = None
    finish_reason: str = "eos"


@dataclass
class Comparison:
    id: int
    prompt_id: int
    prompt: str
    messages: list[dict]
    k: int
    round: int
    source: str
    completions: list[dict] = field(default_factory=list)  # letter, id, text, model_version, ...


def add(cur, prompt_id: int, completions: list[NewCompletion], source: str = "generated", round: int = 1) -> int:
    """Store one comparison and its completions, lettered A, B, C... in the order given."""
    comparison_id = cur.execute(
        "INSERT INTO comparisons (prompt_id, k, round, source) VALUES (?, ?, ?, ?) RETURNING id",
        [prompt_id, len(completions), round, source],
    ).fetchone()[0]
    cur.executemany(
        "INSERT INTO completions (comparison_id, letter, text, model_version, sampling, num_tokens, finish_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            [comparison_id, chr(ord("A") + i), c.text, c.model_version,
             json.dumps(c.sampling) if c.sampling is not None else None, c.num_tokens, c.finish_reason]
            for i, c in enumerate(completions)
        ],
    )
    return comparison_id


def get(cur, comparison_id: int) -> Comparison | None:
    row = cur.execute(
        "SELECT c.id, c.prompt_id, p.text, p.messages, c.k, c.round, c.source"
        " FROM comparisons c JOIN prompts p ON p.id = c.prompt_id WHERE c.id = ?",
        [comparison_id],
    ).fetchone()
    if row is None:
        return None
    comparison = Comparison(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])
    completions = cur.execute(
        "SELECT letter, id, text, model_version, sampling, num_tokens, finish_reason"
        " FROM completions WHERE comparison_id = ? ORDER BY letter",
        [comparison_id],
    ).df()
    comparison.completions = completions.to_dict("records")
    return comparison


def list_comparisons(cur, pending: bool = False, limit: int | None = None) -> pd.DataFrame:
    """One row per comparison with its completions (list of texts, A first) and how many
    rankings it has; `pending` keeps those nobody has ranked yet."""
    return cur.execute(
        "SELECT c.id, c.prompt_id, p.prompt_set, p.text AS prompt, c.k, c.round, c.source, c.created_at,"
        "       list(m.text ORDER BY m.letter) AS completions,"
        "       list(DISTINCT m.model_version) FILTER (WHERE m.model_version IS NOT NULL) AS model_versions,"
        "       (SELECT count(*) FROM rankings r WHERE r.comparison_id = c.id) AS rankings"
        " FROM comparisons c JOIN prompts p ON p.id = c.prompt_id JOIN completions m ON m.comparison_id = c.id"
        " GROUP BY ALL"
        " HAVING NOT ? OR rankings = 0"
        " ORDER BY c.id LIMIT ?",
        [pending, limit],
    ).df()
