"""Arena leaderboard maths (Bradley-Terry ratings, bootstrap intervals, win rates) and the
storage of battles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import storage.arena as arena_store
from rlhf.preference import arena
from storage import models
from storage.db import Store


def simulate_battles(ratings: dict[str, float], n: int, seed: int, tie_share: float = 0.0) -> pd.DataFrame:
    """n battles between random pairs, random sides, each won as Bradley-Terry on the Elo
    scale says; a tie_share of them (drawn independently of strength) are ties."""
    rng = np.random.default_rng(seed)
    names = np.array(list(ratings))
    values = np.array(list(ratings.values()))
    first = rng.integers(0, len(names), n)
    second = (first + rng.integers(1, len(names), n)) % len(names)
    p_first = 1 / (1 + 10 ** ((values[second] - values[first]) / 400))
    vote = np.where(rng.random(n) < p_first, "a", "b")
    vote = np.where(rng.random(n) < tie_share, "tie", vote)
    return pd.DataFrame({"model_a": names[first], "model_b": names[second], "vote": vote})


TRUE = {"v3": 1200.0, "v2": 1100.0, "v1": 1000.0, "base": 900.0}  # mean 1050


def test_bradley_terry_recovers_known_ratings():
    battles = simulate_battles(TRUE, n=4000, seed=0)
    fitted = arena.bradley_terry(battles)
    assert list(fitted["model"]) == ["v3", "v2", "v1", "base"]
    assert fitted["rating"].mean() == pytest.approx(1000.0)
    centred = {model: rating - 50.0 for model, rating in TRUE.items()}  # the fit averages 1000
    for model, rating in zip(fitted["model"], fitted["rating"]):
        assert rating == pytest.approx(centred[model], abs=30)


def test_anchor_pins_a_version_at_1000():
    battles = simulate_battles(TRUE, n=2000, seed=1)
    free = arena.bradley_terry(battles).set_index("model")["rating"]
    anchored = arena.bradley_terry(battles, anchor="base").set_index("model")["rating"]
    assert anchored["base"] == pytest.approx(1000.0)
    np.testing.assert_allclose(anchored - anchored["base"], free - free["base"], atol=1e-6)
    with pytest.raises(ValueError, match="anchor 'nope'"):
        arena.bradley_terry(battles, anchor="nope")


def test_ties_and_both_bad_count_as_half_a_win():
    # x beats y once and they tie twice: x has 1 + 2 * 0.5 = 2 wins, y has 1, and the
    # prior adds half a virtual tie each; with two versions the odds are the win ratio.
    battles = pd.DataFrame({"model_a": ["x", "y", "x"], "model_b": ["y", "x", "y"],
                            "vote": ["a", "tie", "tie"]})
    ratings = arena.bradley_terry(battles).set_index("model")["rating"]
    expected_gap = 400 * math.log10((2 + arena.PRIOR_TIES / 2) / (1 + arena.PRIOR_TIES / 2))
    assert ratings["x"] - ratings["y"] == pytest.approx(expected_gap, rel=1e-8)
    both_bad = arena.bradley_terry(battles.replace({"vote": {"tie": "both_bad"}}))
    pd.testing.assert_frame_equal(both_bad, arena.bradley_terry(battles))


def test_a_version_that_only_wins_stays_finite():
    battles = pd.DataFrame({"model_a": ["x"] * 30 + ["y"] * 30, "model_b": ["y"] * 30 + ["z"] * 30,
                            "vote": ["a"] * 60})
    board = arena.leaderboard(battles, rounds=200)
    assert list(board["model"]) == ["x", "y", "z"]
    assert np.isfinite(board[["rating", "ci_low", "ci_high"]].to_numpy()).all()
    assert list(board["rank"]) == [1, 2, 3]


def test_self_battles_and_bad_input():
    battles = pd.DataFrame({"model_a": ["x", "x"], "model_b": ["x", "y"], "vote": ["a", "b"]})
    assert arena.leaderboard(battles, rounds=10)["battles"].tolist() == [1, 1]  # the self-battle is left out
    with pytest.raises(ValueError, match="Votes must be one of a, b, tie, both_bad, not 'A'"):
        arena.bradley_terry(battles.assign(vote=["a", "A"]))
    with pytest.raises(ValueError, match="vote missing"):
        arena.bradley_terry(battles.drop(columns="vote"))
    empty = pd.DataFrame({"model_a": [], "model_b": [], "vote": []})
    assert arena.bradley_terry(empty).empty and arena.leaderboard(empty).empty
    assert list(arena.leaderboard(empty).columns) == arena.LEADERBOARD_COLUMNS


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_battles():
    few = arena.bootstrap_intervals(simulate_battles(TRUE, n=400, seed=2, tie_share=0.1), rounds=500, seed=0)
    many = arena.bootstrap_intervals(simulate_battles(TRUE, n=6400, seed=3, tie_share=0.1), rounds=500, seed=0)
    for intervals in (few, many):
        assert (intervals["ci_low"] <= intervals["rating"]).all()
        assert (intervals["rating"] <= intervals["ci_high"]).all()
    width_few = (few["ci_high"] - few["ci_low"]).mean()
    width_many = (many["ci_high"] - many["ci_low"]).mean()
    # 16 times the battles: about a quarter of the width (1 / sqrt(16)).
    assert 0.15 < width_many / width_few < 0.4
    again = arena.bootstrap_intervals(simulate_battles(TRUE, n=400, seed=2, tie_share=0.1), rounds=500, seed=0)
    pd.testing.assert_frame_equal(few, again)


def test_leaderboard_of_a_thousand_battles_orders_five_models():
    battles = simulate_battles({f"m{i}": 1000.0 + 50 * i for i in range(5)}, n=1000, seed=4, tie_share=0.1)
    board = arena.leaderboard(battles, rounds=1000)
    assert list(board["model"]) == ["m4", "m3", "m2", "m1", "m0"]


def test_leaderboard_tallies_and_ranks():
    battles = simulate_battles(TRUE, n=1000, seed=5, tie_share=0.2)
    battles.loc[battles.index[:50], "vote"] = "both_bad"
    board = arena.leaderboard(battles, rounds=300)
    assert list(board.columns) == arena.LEADERBOARD_COLUMNS
    assert board["rating"].is_monotonic_decreasing
    assert (board["wins"] + board["ties"] + board["both_bad"] + board["losses"] == board["battles"]).all()
    assert board["battles"].sum() == 2 * len(battles)
    assert board["wins"].sum() == board["losses"].sum() == (battles["vote"].isin(["a", "b"])).sum()
    assert board["both_bad"].sum() == 2 * 50
    # Ranks: 1 + the versions whose interval lies wholly above.
    for _, row in board.iterrows():
        assert row["rank"] == 1 + (board["ci_low"] > row["ci_high"]).sum()
    assert board["rank"].iloc[0] == 1


def test_win_rate_matrix_by_hand():
    battles = pd.DataFrame({
        "model_a": ["x", "y", "x", "x"],
        "model_b": ["y", "x", "z", "y"],
        "vote": ["a", "tie", "b", "both_bad"],
    })
    # x-y: x won once, tied twice (tie, both bad) -> x 2 of 3, y 1 of 3. x-z: z won. y-z never met.
    matrix = arena.win_rate_matrix(battles)
    assert list(matrix.index) == list(matrix.columns) == ["x", "y", "z"]
    assert matrix.loc["x", "y"] == pytest.approx(2 / 3)
    assert matrix.loc["y", "x"] == pytest.approx(1 / 3)
    assert matrix.loc["x", "z"] == 0.0 and matrix.loc["z", "x"] == 1.0
    assert np.isnan(matrix.loc["y", "z"]) and np.isnan(matrix.loc["z", "y"])
    assert np.isnan(np.diag(matrix.to_numpy())).all()


def test_battles_round_trip_through_the_store(tmp_path):
    with Store(tmp_path / "x.duckdb") as store:
        with store.transaction() as cur:
            for name in ("base", "v1"):
                models.register(cur, name, "policy", "tiny", f"models/{name}", "import")
        cur = store.cursor()
        votes = ["a", "b", "tie", "both_bad", "a"]
        ids = [
            arena_store.add_battle(cur, None, f"prompt {i}", "v1" if i % 2 else "base",
                                   "base" if i % 2 else "v1", f"left {i}", f"right {i}", vote, "ann")
            for i, vote in enumerate(votes)
        ]
        assert ids == sorted(ids) and len(set(ids)) == 5
        with pytest.raises(ValueError, match="A vote must be one of a, b, tie, both_bad, not 'left'"):
            arena_store.add_battle(cur, None, "p", "base", "v1", "x", "y", "left", "ann")
        arena_store.add_battle(cur, None, "p", "base", "v1", "x", "y", "tie", "bob")

        stored = arena_store.battles(cur)
        assert list(stored.columns) == arena_store.BATTLE_COLUMNS
        assert stored["vote"].tolist() == [*votes, "tie"]
        assert stored["voter"].tolist() == ["ann"] * 5 + ["bob"]
        assert stored.loc[1, ["model_a", "model_b", "completion_a"]].tolist() == ["v1", "base", "left 1"]
        assert arena_store.get(cur, ids[1])["prompt_text"] == "prompt 1"
        assert arena_store.get(cur, 10**9) is None
        assert arena_store.count(cur) == 6 and arena_store.count(cur, voter="bob") == 1
        assert arena_store.voters(cur).to_dict("list") == {"voter": ["ann", "bob"], "battles": [5, 1]}
        assert arena_store.battles(cur, models=["base"]).empty

        # base-v1: battle 0 base wins (a), 1 v1 on the left loses (b) -> base, 2 tie,
        # 3 v1 on the left, both bad, 4 base wins (a), 5 tie.
        counts = arena_store.vote_counts(cur)
        assert counts.iloc[0].to_dict() == {"model_1": "base", "model_2": "v1", "battles": 6, "wins_1": 3,
                                            "wins_2": 0, "ties": 2, "both_bad": 1}
        board = arena.leaderboard(stored, rounds=100)
        assert board["model"].tolist() == ["base", "v1"]
        assert board.set_index("model").loc["base", ["wins", "ties", "both_bad", "losses"]].tolist() == [3, 2, 1, 0]
