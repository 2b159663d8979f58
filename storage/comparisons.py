"""Comparisons: one prompt with K completions shown together."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pandas as pd

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


def add_imported_pairs(cur, prompt_ids: list[int], chosen: list[str], rejected: list[str], annotator: str,
                       rng: random.Random | None = None) -> int:
    """Store external preference pairs as two-completion comparisons, each ranked by
    `annotator` with source 'import'. The chosen answer goes to A or B at random (`rng`),
    pair by pair: always at A, the letter would tell an annotator shown the pair which
    answer the file preferred. Set-based inserts, since public preference sets run to
    hundreds of thousands of rows."""
    rng = rng or random.Random()
    chosen_letter = [rng.choice("AB") for _ in prompt_ids]
    staged = pd.DataFrame({"prompt_id": prompt_ids, "chosen": chosen, "rejected": rejected,
                           "chosen_letter": chosen_letter})
    cur.register("staged_pairs", staged)
    try:
        cur.execute(
            "CREATE TEMP TABLE numbered_pairs AS SELECT nextval('comparison_id_seq') AS comparison_id,"
            " nextval('ranking_id_seq') AS ranking_id, * FROM staged_pairs"
        )
        cur.execute(
            "INSERT INTO comparisons (id, prompt_id, k, source) SELECT comparison_id, prompt_id, 2, 'import' FROM numbered_pairs"
        )
        cur.execute(
            "INSERT INTO completions (comparison_id, letter, text, finish_reason)"
            " SELECT comparison_id, chosen_letter, chosen, 'import' FROM numbered_pairs"
            " UNION ALL SELECT comparison_id, CASE chosen_letter WHEN 'A' THEN 'B' ELSE 'A' END, rejected, 'import'"
            " FROM numbered_pairs"
        )
        cur.execute(
            "INSERT INTO rankings (id, comparison_id, annotator, source, ranking)"
            " SELECT ranking_id, comparison_id, ?, 'import', CASE chosen_letter WHEN 'A' THEN 'A > B' ELSE 'B > A' END"
            " FROM numbered_pairs",
            [annotator],
        )
        cur.execute(
            "INSERT INTO ranking_ranks (ranking_id, completion_id, rank)"
            " SELECT n.ranking_id, m.id, CASE WHEN m.letter = n.chosen_letter THEN 1 ELSE 2 END"
            " FROM numbered_pairs n JOIN completions m ON m.comparison_id = n.comparison_id"
        )
        return cur.execute("SELECT count(*) FROM numbered_pairs").fetchall()[0][0]
    finally:
        cur.execute("DROP TABLE IF EXISTS numbered_pairs")
        cur.unregister("staged_pairs")


def get(cur, comparison_id: int) -> Comparison | None:
    row = first_row(cur.execute(
        "SELECT c.id, c.prompt_id, p.text, p.messages, c.k, c.round, c.source"
        " FROM comparisons c JOIN prompts p ON p.id = c.prompt_id WHERE c.id = ?",
        [comparison_id],
    ))
    if row is None:
        return None
    comparison = Comparison(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])
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
