"""A synthetic store for measuring at scale: `comparisons` comparisons of K=4, each ranked
by four annotators in one of four consistent shapes (ties included), written by set-based
SQL in seconds. Used by `python -m rlhf.bench scale`, never by the workbench itself."""

from __future__ import annotations

from storage.db import Store, draw_sequence_to

ANNOTATORS = 4
SHAPES = (  # (ranking, the ranks of A, B, C, D)
    ("A > B > C > D", (1, 2, 3, 4)),
    ("B > A > C > D", (2, 1, 3, 4)),
    ("A > B = C > D", (1, 2, 2, 3)),
    ("D > C > B > A", (4, 3, 2, 1)),
)
_SEQUENCES = (("prompt_id_seq", "prompts"), ("comparison_id_seq", "comparisons"),
              ("completion_id_seq", "completions"), ("ranking_id_seq", "rankings"))


def fill(store: Store, comparisons: int, prompt_set: str = "synthetic") -> int:
    """Add the synthetic rows to an empty store; returns the number of rankings
    (`comparisons` × 4). Annotators mostly agree in part, and one in five of the last
    annotator's rankings reverses the order, so agreement is neither 0 nor 1."""
    if comparisons < 1:
        raise ValueError(f"comparisons must be at least 1, not {comparisons}")
    with store.transaction() as cur:
        if cur.execute("SELECT count(*) FROM comparisons").fetchone()[0]:
            raise ValueError("the synthetic rows go into an empty store only")
        cur.execute("INSERT INTO prompt_sets (name) VALUES (?)", [prompt_set])
        text = "'Prompt number ' || i || ': explain something at some length, please.'"
        cur.execute(f"""INSERT INTO prompts (id, prompt_set, text, messages, fingerprint, source)
            SELECT i, ?, {text}, to_json([{{'role': 'user', 'content': {text}}}]), md5(i::varchar), 'synthetic'
            FROM range(1, ? + 1) t(i)""", [prompt_set, comparisons])
        cur.execute("INSERT INTO comparisons (id, prompt_id, k, source) SELECT i, i, 4, 'generated' "
                    "FROM range(1, ? + 1) t(i)", [comparisons])
        cur.execute("""INSERT INTO completions (id, comparison_id, letter, text, finish_reason)
            SELECT (i - 1) * 4 + l + 1, i, chr(65 + l::int), repeat('Completion ' || chr(65 + l::int) || ' of ' || i || '. ', 8),
                   'eos'
            FROM range(1, ? + 1) t(i), range(0, 4) u(l)""", [comparisons])
        cur.execute("CREATE TEMP TABLE synthetic_shapes (shape INTEGER, ranking VARCHAR, ranks INTEGER[])")
        cur.executemany("INSERT INTO synthetic_shapes VALUES (?, ?, ?)",
                        [[n, ranking, list(ranks)] for n, (ranking, ranks) in enumerate(SHAPES)])
        cur.execute("""INSERT INTO rankings (id, comparison_id, annotator, source, ranking, seconds_spent)
            SELECT (i - 1) * ? + a + 1, i, 'annotator' || a, 'human', s.ranking, 30
            FROM range(1, ? + 1) t(i), range(0, ?) u(a), synthetic_shapes s
            WHERE s.shape = CASE WHEN a = ? - 1 AND i % 5 = 0 THEN 3 ELSE (i + a) % 3 END""",
                    [ANNOTATORS, comparisons, ANNOTATORS, ANNOTATORS])
        cur.execute("""INSERT INTO ranking_ranks (ranking_id, completion_id, rank)
            SELECT r.id, (r.comparison_id - 1) * 4 + l + 1, s.ranks[l + 1]
            FROM rankings r JOIN synthetic_shapes s USING (ranking), range(0, 4) u(l)""")
        cur.execute("DROP TABLE synthetic_shapes")
        for sequence, table in _SEQUENCES:  # the next id a real insert takes is past the synthetic ones
            draw_sequence_to(cur, sequence, cur.execute(f"SELECT max(id) FROM {table}").fetchone()[0])
        return cur.execute("SELECT count(*) FROM rankings").fetchone()[0]
