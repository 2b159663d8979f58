"""Arena battles: two model versions answer one prompt, a voter picks the better answer."""

from __future__ import annotations

import pandas as pd

from storage.db import first_row

VOTES = ("a", "b", "tie", "both_bad")
BATTLE_COLUMNS = ["id", "prompt_id", "prompt_text", "model_a", "model_b", "completion_a",
                  "completion_b", "vote", "voter", "created_at"]


def check_vote(vote: str) -> str:
    if vote not in VOTES:
        raise ValueError(f"A vote must be one of {', '.join(VOTES)}, not {vote!r}.")
    return vote


def add_battle(
    cur,
    prompt_id: int | None,
    prompt_text: str,
    model_a: str,
    model_b: str,
    completion_a: str,
    completion_b: str,
    vote: str,
    voter: str,
) -> int:
    """Store one vote; returns the battle's id. `prompt_id` is None for a prompt typed in
    the arena rather than taken from a prompt set."""
    check_vote(vote)
    return cur.execute(
        "INSERT INTO arena_battles (prompt_id, prompt_text, model_a, model_b, completion_a,"
        " completion_b, vote, voter) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [prompt_id, prompt_text, model_a, model_b, completion_a, completion_b, vote, voter],
    ).fetchall()[0][0]


def battles(cur, models: list[str] | None = None) -> pd.DataFrame:
    """Every vote with its voter, oldest first (columns `BATTLE_COLUMNS`); with `models`,
    only battles where both sides are among them."""
    where, params = "", []
    if models is not None:
        where, params = " WHERE list_contains(?, model_a) AND list_contains(?, model_b)", [models, models]
    return cur.execute(f"SELECT {', '.join(BATTLE_COLUMNS)} FROM arena_battles{where} ORDER BY id", params).df()


def get(cur, battle_id: int) -> dict | None:
    frame = cur.execute(f"SELECT {', '.join(BATTLE_COLUMNS)} FROM arena_battles WHERE id = ?", [battle_id]).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def count(cur, voter: str | None = None) -> int:
    """How many battles are stored (by `voter` when given)."""
    if voter is None:
        return first_row(cur.execute("SELECT count(*) FROM arena_battles"))[0]
    return first_row(cur.execute("SELECT count(*) FROM arena_battles WHERE voter = ?", [voter]))[0]


def vote_counts(cur) -> pd.DataFrame:
    """Votes per pair of versions, whichever side each was shown on: columns `model_1` and
    `model_2` (alphabetical), `battles`, `wins_1`, `wins_2`, `ties`, `both_bad`; the
    least-played pairs first, which is the order a fair arena draws its next pair in."""
    return cur.execute(
        "SELECT least(model_a, model_b) AS model_1, greatest(model_a, model_b) AS model_2,"
        "       count(*) AS battles,"
        "       count(*) FILTER (WHERE (vote = 'a' AND model_a < model_b)"
        "                          OR (vote = 'b' AND model_b < model_a)) AS wins_1,"
        "       count(*) FILTER (WHERE (vote = 'a' AND model_a > model_b)"
        "                          OR (vote = 'b' AND model_b > model_a)) AS wins_2,"
        "       count(*) FILTER (WHERE vote = 'tie') AS ties,"
        "       count(*) FILTER (WHERE vote = 'both_bad') AS both_bad"
        " FROM arena_battles GROUP BY ALL ORDER BY battles, model_1, model_2"
    ).df()


def voters(cur) -> pd.DataFrame:
    """Battles per voter (columns `voter`, `battles`), most active first."""
    return cur.execute(
        "SELECT voter, count(*) AS battles FROM arena_battles GROUP BY voter ORDER BY battles DESC, voter"
    ).df()
