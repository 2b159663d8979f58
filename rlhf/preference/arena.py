"""Leaderboard maths for blind A/B battles between model versions.

A battle is one prompt answered by two versions, shown side by side without their names,
and one vote: ``'a'`` (the left answer is better), ``'b'``, ``'tie'`` or ``'both_bad'``.
Every function here takes the battles as a DataFrame with columns ``model_a``,
``model_b`` and ``vote`` (further columns are ignored) and is pure: no store, no torch.

Ratings follow Chatbot Arena (Chiang et al. 2024, "Chatbot Arena: An Open Platform for
Evaluating LLMs by Human Preference", ICML, §5 and its published notebook): a
Bradley-Terry model (Bradley & Terry 1952, "Rank Analysis of Incomplete Block Designs:
I. The Method of Paired Comparisons", Biometrika 39(3/4)), P(i beats j) =
1 / (1 + 10 ** ((R_j - R_i) / 400)), fitted by maximum likelihood and put on an Elo-like
scale: a 400-point gap is 10:1 odds, and the ratings average 1000 (or one named anchor
version is pinned at 1000). A tie and a "both bad" vote count as half a win for each side,
as Chatbot Arena does for its ties. The fit is the MM iteration shared with the consensus
ordering of ``rlhf.preference.agreement`` (:func:`rlhf.preference.agreement.fit_bradley_terry`).

A version that only ever won (or lost) has no finite maximum likelihood rating (Ford
1957). As a small prior, every two versions get ``PRIOR_TIES`` virtual tied battles
(half a win each way): it keeps every rating finite, ties versions that never met
together loosely, and moves ratings backed by tens of battles by a rating point or so.

Confidence intervals are the 2.5 and 97.5 percentiles of ratings refitted to battles
resampled with replacement (the percentile bootstrap, Efron 1979), as in the Chatbot
Arena notebook. Resampling n battles with replacement is a multinomial draw over the
distinct (pair, outcome) kinds of battle, so every round is a handful of counts and all
rounds are fitted together as one batched array. Battles of a version against itself say
nothing about ratings and are left out of every figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rlhf.preference.agreement import fit_bradley_terry

VOTES = ("a", "b", "tie", "both_bad")
SCALE, BASE, ANCHOR_RATING = 400.0, 10.0, 1000.0
PRIOR_TIES = 1.0  # virtual tied battles between every two versions (see the module docstring)
_TOLERANCE = 1e-10  # convergence of the log-strengths: far below a thousandth of a rating point
LEADERBOARD_COLUMNS = [
    "rank", "model", "rating", "ci_low", "ci_high", "battles", "wins", "ties", "both_bad", "losses",
]
INTERVAL_COLUMNS = ["model", "rating", "ci_low", "ci_high"]


def _checked(battles: pd.DataFrame) -> pd.DataFrame:
    """The battles between two different versions, after checking columns and votes."""
    missing = [column for column in ("model_a", "model_b", "vote") if column not in battles.columns]
    if missing:
        raise ValueError(f"The battles need the columns model_a, model_b and vote; {', '.join(missing)} missing.")
    unknown = sorted(set(battles["vote"]) - set(VOTES), key=str)
    if unknown:
        raise ValueError(f"Votes must be one of {', '.join(VOTES)}, not {', '.join(map(repr, unknown))}.")
    battles = battles[["model_a", "model_b", "vote"]]
    return battles[battles["model_a"] != battles["model_b"]]


def _kinds(battles: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The versions (sorted) and the distinct kinds of battle: for each kind the two
    versions' indices, the share of a win the first one gets (1, 0 or 0.5) and how many
    battles are of that kind."""
    models = sorted(set(battles["model_a"]) | set(battles["model_b"]))
    index = {model: position for position, model in enumerate(models)}
    score = battles["vote"].map({"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5})
    kinds = (
        pd.DataFrame({"i": battles["model_a"].map(index), "j": battles["model_b"].map(index), "score": score})
        .groupby(["i", "j", "score"], sort=True).size().reset_index(name="count")
    )
    return (models, kinds[["i", "j"]].to_numpy(dtype=int), kinds["score"].to_numpy(dtype=float),
            kinds["count"].to_numpy(dtype=float))


def _win_matrices(pairs: np.ndarray, scores: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    """``wins[..., i, j]`` from battle-kind counts of shape ``(..., kinds)``."""
    first, second = pairs[:, 0] * size + pairs[:, 1], pairs[:, 1] * size + pairs[:, 0]
    # One column per kind, so a matrix product adds up the kinds landing on each cell.
    to_cells = np.zeros((len(scores), size * size))
    to_cells[np.arange(len(scores)), first] += scores
    to_cells[np.arange(len(scores)), second] += 1.0 - scores
    return (counts @ to_cells).reshape(*counts.shape[:-1], size, size)


def _ratings(wins: np.ndarray, models: list[str], anchor: str | None) -> np.ndarray:
    """Elo-scale ratings from win matrices of shape ``(..., M, M)``, prior ties added."""
    log_strengths = fit_bradley_terry(wins + PRIOR_TIES / 2, tolerance=_TOLERANCE)
    ratings = SCALE / math.log(BASE) * log_strengths
    reference = ratings[..., models.index(anchor), None] if anchor is not None else 0.0
    return ANCHOR_RATING + ratings - reference


def _check_anchor(anchor: str | None, models: list[str]) -> None:
    if anchor is not None and anchor not in models:
        raise ValueError(f"The anchor {anchor!r} fought no battle against another version.")


def bradley_terry(battles: pd.DataFrame, anchor: str | None = None) -> pd.DataFrame:
    """Maximum likelihood Bradley-Terry ratings on the Elo-like scale.

    Args:
        battles (pd.DataFrame): columns ``model_a``, ``model_b``, ``vote`` (one of ``VOTES``).
        anchor (str | None): a version whose rating is pinned at 1000; by default the
            ratings average 1000.

    Returns:
        pd.DataFrame: columns ``model``, ``rating``, one row per version that fought
        another, best first (ties in rating by name).
    """
    battles = _checked(battles)
    models, pairs, scores, counts = _kinds(battles)
    if not models:
        return pd.DataFrame({"model": pd.Series(dtype=object), "rating": pd.Series(dtype=float)})
    _check_anchor(anchor, models)
    ratings = _ratings(_win_matrices(pairs, scores, counts, len(models)), models, anchor)
    frame = pd.DataFrame({"model": models, "rating": ratings})
    return frame.sort_values(["rating", "model"], ascending=[False, True], ignore_index=True)


def bootstrap_intervals(
    battles: pd.DataFrame, rounds: int = 1000, seed: int = 0, anchor: str | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of the ratings: battles resampled with replacement.

    Args:
        battles (pd.DataFrame): columns ``model_a``, ``model_b``, ``vote``.
        rounds (int): bootstrap resamples, >= 1.
        seed (int): seeds ``numpy.random.default_rng``; the same seed gives the same intervals.
        anchor (str | None): as in :func:`bradley_terry`, pinned at 1000 in every round.
        confidence (float): the interval's coverage, 0.95 for the 2.5 and 97.5 percentiles.

    Returns:
        pd.DataFrame: columns ``model``, ``rating`` (the point estimate of
        :func:`bradley_terry`), ``ci_low``, ``ci_high``, best first.
    """
    if rounds < 1:
        raise ValueError(f"The bootstrap needs at least one round, not {rounds}.")
    if not 0 < confidence < 1:
        raise ValueError(f"The confidence must lie between 0 and 1, not {confidence}.")
    point = bradley_terry(battles, anchor)
    if point.empty:
        return point.assign(ci_low=pd.Series(dtype=float), ci_high=pd.Series(dtype=float))
    models, pairs, scores, counts = _kinds(_checked(battles))
    resampled = np.random.default_rng(seed).multinomial(int(counts.sum()), counts / counts.sum(), size=rounds)
    ratings = _ratings(_win_matrices(pairs, scores, resampled.astype(float), len(models)), models, anchor)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratings, [tail, 100 - tail], axis=0)
    intervals = pd.DataFrame({"model": models, "ci_low": low, "ci_high": high})
    return point.merge(intervals, on="model", how="left")[INTERVAL_COLUMNS]


def _tallies(battles: pd.DataFrame) -> pd.DataFrame:
    """Battles, wins, ties, both_bad and losses per version, each battle seen from both sides."""
    sides = pd.concat([
        pd.DataFrame({"model": battles["model_a"], "vote": battles["vote"].map(
            {"a": "wins", "b": "losses", "tie": "ties", "both_bad": "both_bad"})}),
        pd.DataFrame({"model": battles["model_b"], "vote": battles["vote"].map(
            {"a": "losses", "b": "wins", "tie": "ties", "both_bad": "both_bad"})}),
    ])
    table = pd.crosstab(sides["model"], sides["vote"]).reindex(
        columns=["wins", "ties", "both_bad", "losses"], fill_value=0)
    table.insert(0, "battles", table.sum(axis=1))
    return table.rename_axis(columns=None).reset_index()


def leaderboard(
    battles: pd.DataFrame, rounds: int = 1000, seed: int = 0, anchor: str | None = None,
) -> pd.DataFrame:
    """The arena leaderboard: ratings with 95% bootstrap intervals and each version's tallies.

    ``rank`` is Chatbot Arena's: one plus the number of versions whose interval lies wholly
    above this one's (``ci_low`` above its ``ci_high``), so versions that cannot be told apart
    share a rank. Rows are sorted by rating, best first.

    Returns:
        pd.DataFrame: columns ``LEADERBOARD_COLUMNS``.
    """
    intervals = bootstrap_intervals(battles, rounds=rounds, seed=seed, anchor=anchor)
    if intervals.empty:
        return pd.DataFrame({column: pd.Series(dtype=object if column == "model" else float)
                             for column in LEADERBOARD_COLUMNS})
    board = intervals.merge(_tallies(_checked(battles)), on="model", how="left")
    low, high = board["ci_low"].to_numpy(), board["ci_high"].to_numpy()
    board["rank"] = 1 + (low[None, :] > high[:, None]).sum(axis=1)
    return board[LEADERBOARD_COLUMNS]


def win_rate_matrix(battles: pd.DataFrame) -> pd.DataFrame:
    """Each row version's empirical win rate against each column version, ties (and "both
    bad") as half a win, over every battle between the two whichever side each was shown on.

    Returns:
        pd.DataFrame: square, index and columns the versions sorted by name; ``NaN`` where
        two versions never met and on the diagonal.
    """
    battles = _checked(battles)
    models, pairs, scores, counts = _kinds(battles)
    if not models:
        return pd.DataFrame(dtype=float)
    wins = _win_matrices(pairs, scores, counts, len(models))
    played = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(played > 0, wins / played, np.nan)
    return pd.DataFrame(rates, index=pd.Index(models, name="model"), columns=pd.Index(models, name="opponent"))
