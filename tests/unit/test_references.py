"""Agreement and arena maths checked against independent implementations (the
``krippendorff`` and ``choix`` packages) and, for the bootstrap, against the truth it
should cover."""

from __future__ import annotations

import itertools
import math

import choix
import krippendorff
import numpy as np
import pandas as pd
import pytest

from rlhf.preference import arena
from rlhf.preference.agreement import bradley_terry_strengths, krippendorff_alpha_ordinal


def random_panel(rng: np.random.Generator) -> np.ndarray:
    """Units x coders of ordinal ranks 1..5 with about a quarter of the values missing."""
    units, coders = int(rng.integers(3, 15)), int(rng.integers(2, 6))
    values = rng.integers(1, int(rng.integers(2, 6)) + 1, size=(units, coders)).astype(float)
    values[rng.random(values.shape) < 0.25] = np.nan
    return values


@pytest.mark.parametrize("seed", range(60))
def test_krippendorff_alpha_matches_the_krippendorff_package(seed):
    panel = random_panel(np.random.default_rng(seed))
    ours = krippendorff_alpha_ordinal(panel.tolist())
    # The package takes coders x units, nan for missing.
    reference = krippendorff.alpha(reliability_data=panel.T, level_of_measurement="ordinal")
    assert ours == pytest.approx(reference, abs=1e-9)


def test_krippendorff_alpha_takes_none_as_missing_like_nan():
    panel = random_panel(np.random.default_rng(7))
    with_none = [[None if math.isnan(value) else value for value in unit] for unit in panel.tolist()]
    assert krippendorff_alpha_ordinal(with_none) == pytest.approx(
        krippendorff.alpha(reliability_data=panel.T, level_of_measurement="ordinal"), abs=1e-9)


def choix_ratings(battles: pd.DataFrame) -> dict[str, float]:
    """Arena ratings computed by choix's I-LSR maximum likelihood fit.

    Every count is doubled so that the half wins are whole comparisons (doubling all
    counts leaves the maximum likelihood unchanged): a win is two (winner, loser) pairs,
    a tie or "both bad" one pair each way, and the arena prior of ``PRIOR_TIES`` virtual
    tied battles per two versions is ``PRIOR_TIES`` pairs each way. choix returns natural
    log-strengths with mean 0; the arena scale is 1000 + 400 / ln(10) * log-strength.
    """
    models = sorted(set(battles["model_a"]) | set(battles["model_b"]))
    index = {model: position for position, model in enumerate(models)}
    data = []
    for a, b, vote in battles[["model_a", "model_b", "vote"]].itertuples(index=False):
        i, j = index[a], index[b]
        data += {"a": [(i, j)] * 2, "b": [(j, i)] * 2}.get(vote, [(i, j), (j, i)])
    assert float(arena.PRIOR_TIES).is_integer()
    for i, j in itertools.combinations(range(len(models)), 2):
        data += [(i, j), (j, i)] * int(arena.PRIOR_TIES)
    params = choix.ilsr_pairwise(len(models), data, alpha=0.0, max_iter=10_000, tol=1e-13)
    params = params - params.mean()
    return {model: 1000 + 400 / math.log(10) * params[index[model]] for model in models}


def test_bradley_terry_matches_choix_on_unbalanced_battles():
    rng = np.random.default_rng(11)
    # Four versions, very unequal numbers of battles per pair, every kind of vote.
    plan = {("m1", "m2"): 60, ("m1", "m3"): 5, ("m2", "m3"): 17, ("m3", "m4"): 2, ("m2", "m4"): 31}
    strength = {"m1": 1.2, "m2": 0.4, "m3": 0.0, "m4": -0.9}
    rows = []
    for (a, b), n in plan.items():
        for _ in range(n):
            left, right = (a, b) if rng.random() < 0.5 else (b, a)
            p_left = 1 / (1 + math.exp(strength[right] - strength[left]))
            draw = rng.random()
            vote = "tie" if draw < 0.1 else "both_bad" if draw < 0.15 else "a" if rng.random() < p_left else "b"
            rows.append((left, right, vote))
    battles = pd.DataFrame(rows, columns=["model_a", "model_b", "vote"])
    assert set(battles["vote"]) == set(arena.VOTES)
    ours = arena.bradley_terry(battles).set_index("model")["rating"].to_dict()
    reference = choix_ratings(battles)
    assert ours.keys() == reference.keys()
    for model in reference:
        assert ours[model] == pytest.approx(reference[model], abs=1e-6), model


def test_bradley_terry_anchor_is_the_same_fit_shifted():
    battles = pd.DataFrame({"model_a": ["x", "x", "y", "z", "z"], "model_b": ["y", "z", "z", "x", "y"],
                            "vote": ["a", "a", "tie", "b", "a"]})
    reference = choix_ratings(battles)
    anchored = arena.bradley_terry(battles, anchor="y").set_index("model")["rating"]
    for model, rating in reference.items():
        assert anchored[model] == pytest.approx(rating - reference["y"] + 1000, abs=1e-6)


def bt_battles(strengths: dict[str, float], n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n battles between uniformly drawn pairs, won as Bradley-Terry on the Elo scale says."""
    names = np.array(list(strengths))
    values = np.array(list(strengths.values()))
    first = rng.integers(0, len(names), n)
    second = (first + rng.integers(1, len(names), n)) % len(names)
    p_first = 1 / (1 + 10 ** ((values[second] - values[first]) / 400))
    vote = np.where(rng.random(n) < p_first, "a", "b")
    return pd.DataFrame({"model_a": names[first], "model_b": names[second], "vote": vote})


def test_bootstrap_intervals_cover_the_true_ratings_about_95_percent_of_the_time():
    # True ratings relative to the anchor "base" (pinned at 1000 in the fit as here).
    truth = {"base": 1000.0, "good": 1100.0, "weak": 930.0}
    repetitions, covered = 40, {model: 0 for model in truth}
    for repetition in range(repetitions):
        battles = bt_battles(truth, n=600, rng=np.random.default_rng(1000 + repetition))
        intervals = arena.bootstrap_intervals(battles, rounds=300, seed=repetition, anchor="base")
        for row in intervals.itertuples():
            covered[row.model] += row.ci_low <= truth[row.model] <= row.ci_high
    # The anchor is pinned, so only the other two have intervals to speak of.
    assert covered["base"] == repetitions
    for model in ("good", "weak"):
        # 95% nominal; with 40 runs a correct interval covers >= 34 times with probability ~0.97.
        assert covered[model] >= 34, (model, covered[model])


def test_consensus_bradley_terry_strengths_match_choix():
    """The consensus strengths of `rlhf.preference.agreement` on rankings with ties: each
    ranking compares every pair once (a tie: half a win each way) and adds `prior_ties`
    virtual ties per pair. Doubled for choix as in `choix_ratings`; both give log-strengths
    with mean 0 (our strengths have geometric mean 1)."""
    rng = np.random.default_rng(5)
    k, rankings = 4, [list(rng.integers(1, 4, size=4)) for _ in range(9)]
    strengths = bradley_terry_strengths(rankings, prior_ties=1.0)
    data = []
    for ranks in rankings:
        for i, j in itertools.combinations(range(k), 2):
            data += [(i, j)] * 2 if ranks[i] < ranks[j] else [(j, i)] * 2 if ranks[j] < ranks[i] else [(i, j), (j, i)]
    for i, j in itertools.combinations(range(k), 2):
        data += [(i, j), (j, i)] * len(rankings)  # 1.0 virtual tie per ranking: half a win each way, doubled
    params = choix.ilsr_pairwise(k, data, alpha=0.0, max_iter=10_000, tol=1e-13)
    assert np.log(strengths) == pytest.approx(params - params.mean(), abs=1e-7)
