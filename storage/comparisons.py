"""Comparisons: one prompt with K completions shown together."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pandas as pd

from storage import feedback
from storage.db import first_row


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
    category: str | None = None  # the prompt's (a combination's gate reads 'unsafe')


def add(cur, prompt_id: int, completions: list[NewCompletion], source: str = "generated", round: int = 1) -> int:
    """Store one comparison and its completions, lettered A, B, C... in the order given."""
    comparison_id = cur.execute(
        "INSERT INTO comparisons (prompt_id, k, round, source) VALUES (?, ?, ?, ?) RETURNING id",
        [prompt_id, len(completions), round, source],
    ).fetchall()[0][0]
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


def add_imported(cur, prompt_ids: list[int], texts: list[list[str]]) -> list[int]:
    """Store imported comparisons, the i-th with the completions `texts[i]` lettered A, B, ...
    in that order, no model behind them; returns their ids in the order given. Set-based
    (a few statements whatever the count), since imported sets run to hundreds of thousands."""
    if not prompt_ids:
        return []
    ids = [row[0] for row in cur.execute(
        "SELECT nextval('comparison_id_seq') FROM range(?)", [len(prompt_ids)]).fetchall()]
    staged = pd.DataFrame({"id": ids, "prompt_id": prompt_ids, "k": [len(t) for t in texts]})
    completions = pd.DataFrame(
        [(comparison_id, chr(ord("A") + i), text)
         for comparison_id, completion_texts in zip(ids, texts) for i, text in enumerate(completion_texts)],
        columns=["comparison_id", "letter", "text"],
    )
    cur.register("staged_comparisons", staged)
    cur.register("staged_completions", completions)
    try:
        cur.execute("INSERT INTO comparisons (id, prompt_id, k, source)"
                    " SELECT id, prompt_id, k, 'import' FROM staged_comparisons")
        cur.execute("INSERT INTO completions (comparison_id, letter, text, finish_reason)"
                    " SELECT comparison_id, letter, text, 'import' FROM staged_completions")
    finally:
        cur.unregister("staged_comparisons")
        cur.unregister("staged_completions")
    return ids


def add_imported_pairs(cur, prompt_ids: list[int], chosen: list[str], rejected: list[str], annotator: str,
                       rng: random.Random | None = None) -> int:
    """Store external preference pairs as two-completion comparisons, each ranked by
    `annotator` with source 'import'. The chosen answer goes to A or B at random (`rng`),
    pair by pair: always at A, the letter would tell an annotator shown the pair which
    answer the file preferred."""
    rng = rng or random.Random()
    chosen_at_a = [rng.choice("AB") == "A" for _ in prompt_ids]
    texts = [[good, bad] if at_a else [bad, good] for good, bad, at_a in zip(chosen, rejected, chosen_at_a)]
    ids = add_imported(cur, prompt_ids, texts)
    feedback.add_imported_rankings(
        cur, ids, [annotator] * len(ids),
        [{"A": 1, "B": 2} if at_a else {"A": 2, "B": 1} for at_a in chosen_at_a],
        ["A > B" if at_a else "B > A" for at_a in chosen_at_a], source="import",
    )
    return len(ids)


def get(cur, comparison_id: int) -> Comparison | None:
    row = first_row(cur.execute(
        "SELECT c.id, c.prompt_id, p.text, p.messages, c.k, c.round, c.source, p.category"
        " FROM comparisons c JOIN prompts p ON p.id = c.prompt_id WHERE c.id = ?",
        [comparison_id],
    ))
    if row is None:
        return None
    comparison = Comparison(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], category=row[7])
    columns = ("letter", "id", "text", "model_version", "sampling", "num_tokens", "finish_reason")
    rows = cur.execute(
        f"SELECT {', '.join(columns)} FROM completions WHERE comparison_id = ? ORDER BY letter", [comparison_id]
    ).fetchall()
    comparison.completions = [dict(zip(columns, row)) for row in rows]
    return comparison


def list_comparisons(cur, pending: bool = False, limit: int | None = None) -> pd.DataFrame:
    """One row per comparison with its completions (list of texts, A first) and how many
    rankings it has; `pending` keeps those nobody has ranked yet."""
    return cur.execute(
        "WITH counted AS (SELECT comparison_id, count(*) AS rankings FROM rankings GROUP BY comparison_id)"
        " SELECT c.id, c.prompt_id, p.prompt_set, p.text AS prompt, c.k, c.round, c.source, c.created_at,"
        "       list(m.text ORDER BY m.letter) AS completions,"
        "       list(DISTINCT m.model_version) FILTER (WHERE m.model_version IS NOT NULL) AS model_versions,"
        "       coalesce(any_value(n.rankings), 0) AS rankings"
        " FROM comparisons c JOIN prompts p ON p.id = c.prompt_id JOIN completions m ON m.comparison_id = c.id"
        " LEFT JOIN counted n ON n.comparison_id = c.id"
        " WHERE NOT ? OR n.rankings IS NULL"
        " GROUP BY c.id, c.prompt_id, p.prompt_set, p.text, c.k, c.round, c.source, c.created_at"
        " ORDER BY c.id LIMIT ?",
        [pending, limit],
    ).df()


def rounds_of(cur, comparison_ids: list[int]) -> dict[int, int]:
    """{comparison id: the round it was made in} for the given comparisons (unknown ids are left out)."""
    return dict(cur.execute("SELECT id, round FROM comparisons WHERE list_contains(?::BIGINT[], id)",
                            [[int(i) for i in comparison_ids]]).fetchall())


def completion_counts(cur, comparison_ids: list[int]) -> dict[int, int]:
    """{comparison id: how many completions it has} for the given comparisons."""
    return dict(cur.execute("SELECT comparison_id, count(*) FROM completions"
                            " WHERE list_contains(?::BIGINT[], comparison_id) GROUP BY comparison_id",
                            [[int(i) for i in comparison_ids]]).fetchall())
