"""Prompts and prompt sets."""

from __future__ import annotations

import hashlib
import json

import pandas as pd


def fingerprint(messages: list[dict]) -> str:
    """Identity of a prompt: the same conversation is stored once per set."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def ensure_set(cur, name: str, description: str | None = None) -> None:
    cur.execute(
        "INSERT INTO prompt_sets (name, description) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [name, description],
    )


def add_prompts(cur, prompt_set: str, conversations: list[list[dict]], source: str,
                categories: list[str | None] | None = None) -> int:
    """Insert conversations (each a list of messages ending with a user turn) into a set;
    returns how many were new. Prompts already in the set are left as they are."""
    ensure_set(cur, prompt_set)
    before = count(cur, prompt_set)
    staged = pd.DataFrame(
        {
            "text": [messages[-1]["content"] for messages in conversations],
            "messages": [json.dumps(messages, ensure_ascii=False) for messages in conversations],
            "fingerprint": [fingerprint(messages) for messages in conversations],
            "category": categories if categories is not None else [None] * len(conversations),
        }
    ).drop_duplicates("fingerprint")
    cur.register("staged_prompts", staged)
    try:
        cur.execute(
            "INSERT INTO prompts (prompt_set, text, messages, fingerprint, category, source)"
            " SELECT ?, text, messages, fingerprint, category, ? FROM staged_prompts"
            " ON CONFLICT DO NOTHING",
            [prompt_set, source],
        )
    finally:
        cur.unregister("staged_prompts")
    return count(cur, prompt_set) - before


def ids_by_fingerprint(cur, prompt_set: str, fingerprints: list[str]) -> list[int]:
    """The ids of the prompts with these fingerprints in a set, in the order given."""
    rows = dict(cur.execute(
        "SELECT fingerprint, id FROM prompts WHERE prompt_set = ? AND list_contains(?, fingerprint)",
        [prompt_set, list(set(fingerprints))],
    ).fetchall())
    return [rows[f] for f in fingerprints]


def count(cur, prompt_set: str | None = None) -> int:
    if prompt_set is None:
        return cur.execute("SELECT count(*) FROM prompts").fetchall()[0][0]
    return cur.execute("SELECT count(*) FROM prompts WHERE prompt_set = ?", [prompt_set]).fetchall()[0][0]


def set_names(cur) -> list[str]:
    return [row[0] for row in cur.execute("SELECT name FROM prompt_sets ORDER BY name").fetchall()]


def set_counts(cur) -> pd.DataFrame:
    return cur.execute(
        "SELECT s.name AS prompt_set, count(p.id) AS prompts"
        " FROM prompt_sets s LEFT JOIN prompts p ON p.prompt_set = s.name"
        " GROUP BY s.name ORDER BY s.name"
    ).df()


def not_compared_by(cur, model_version: str, prompt_set: str | None, limit: int) -> pd.DataFrame:
    """Prompts (id, text, messages) that `model_version` has made no comparison for,
    oldest first, so repeated calls walk through a set instead of resampling it."""
    frame = cur.execute(
        "SELECT p.id, p.text, p.messages FROM prompts p"
        " WHERE (? IS NULL OR p.prompt_set = ?)"
        " AND NOT EXISTS (SELECT 1 FROM comparisons c JOIN completions m ON m.comparison_id = c.id"
        "                 WHERE c.prompt_id = p.id AND m.model_version = ?)"
        " ORDER BY p.id LIMIT ?",
        [prompt_set, prompt_set, model_version, limit],
    ).df()
    frame["messages"] = frame["messages"].map(json.loads)
    return frame


def in_sets(cur, prompt_sets: list[str] | None) -> pd.DataFrame:
    """Prompts (id, prompt_set, messages, category) of the given sets, or of every set."""
    frame = cur.execute(
        "SELECT p.id, p.prompt_set, p.messages, p.category FROM prompts p"
        " WHERE ? IS NULL OR list_contains(?, p.prompt_set) ORDER BY p.id",
        [prompt_sets, prompt_sets],
    ).df()
    frame["messages"] = frame["messages"].map(json.loads)
    return frame


def category_by_comparison(cur) -> dict:
    """Each comparison's prompt category (None where its prompt has none)."""
    return dict(cur.execute(
        "SELECT c.id, p.category FROM comparisons c JOIN prompts p ON p.id = c.prompt_id").fetchall())


def by_id(cur, prompt_id: int) -> pd.DataFrame:
    """The prompt (id, prompt_set, messages) with this id: one row, or none."""
    frame = cur.execute("SELECT id, prompt_set, messages FROM prompts WHERE id = ?", [int(prompt_id)]).df()
    frame["messages"] = frame["messages"].map(json.loads)
    return frame
