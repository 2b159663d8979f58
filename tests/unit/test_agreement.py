"""Agreement between annotators and consensus rankings, checked against hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from rlhf.preference.agreement import (
    CONSENSUS_METHODS,
    annotator_agreement,
    borda_scores,
    bradley_terry_strengths,
    consensus,
    gold_agreement,
    kendall_tau_b,
    krippendorff_alpha_ordinal,
    pairwise_agreement,
    pairwise_figures,
    pairwise_wins,
    ranked_pairs_locks,
)
from rlhf.preference.ranking import MAX_K, MIN_K, parse_ranking, ranking_from_ranks


def ranks(text: str, k: int) -> list[int]:
    """The rank list of a ranking written in the workbench grammar."""
    return parse_ranking(text, k).rank_list()


@st.composite
def rank_lists(draw, k: int | None = None) -> list[int]:
    """A dense rank list of K completions, ties allowed, as Ranking.rank_list() gives."""
    k = draw(st.integers(MIN_K, MAX_K)) if k is None else k
    raw = draw(st.lists(st.integers(1, k), min_size=k, max_size=k))
    return ranking_from_ranks(raw).rank_list()


@st.composite
def ranking_panels(draw) -> list[list[int]]:
    """Several annotators' rank lists of the same K completions."""
    k = draw(st.integers(MIN_K, MAX_K))
    return draw(st.lists(rank_lists(k), min_size=1, max_size=6))


# --- pairwise agreement and Kendall tau-b ------------------------------------------------


def test_pairwise_agreement_counts_ties_as_a_relation():
    # a = A > B = C > D = [1, 2, 2, 3]; b = A > C = D > B = [1, 3, 2, 2]
    # AB: < <  agree     AC: < <  agree     AD: < <  agree
    # BC: = >  disagree  BD: < >  disagree  CD: < =  disagree      -> 3 of 6 = 0.5
    a, b = ranks("A > B = C > D", 4), ranks("A > C = D > B", 4)
    assert (a, b) == ([1, 2, 2, 3], [1, 3, 2, 2])
    assert pairwise_agreement(a, b) == 0.5


def test_pairwise_agreement_of_reversed_ranking_is_zero_and_of_shared_tie_is_one():
    assert pairwise_agreement([1, 2, 3], [3, 2, 1]) == 0.0
    assert pairwise_agreement([1, 1], [1, 1]) == 1.0
    assert pairwise_agreement([1, 1, 3], [1, 1, 2]) == 1.0  # gaps mean nothing


def test_kendall_tau_b_by_hand():
    # Same rankings as above: n0 = 6 pairs; concordant AB, AC, AD = 3; discordant BD = 1;
    # tied in a: BC (n1 = 1); tied in b: CD (n2 = 1).
    # tau_b = (3 - 1) / sqrt((6 - 1) * (6 - 1)) = 2 / 5
    assert kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(0.4)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_kendall_tau_b_is_nan_when_one_annotator_ties_everything():
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_rank_lists_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="different lengths"):
        pairwise_agreement([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least two completions"):
        kendall_tau_b([1], [1])


@given(rank_lists())
def test_a_ranking_agrees_with_itself(ranking):
    assert pairwise_agreement(ranking, ranking) == 1.0
    tau = kendall_tau_b(ranking, ranking)
    if len(set(ranking)) == 1:
        assert math.isnan(tau)
    else:
        assert tau == pytest.approx(1.0)


@given(st.integers(MIN_K, MAX_K).flatmap(lambda k: st.tuples(rank_lists(k), rank_lists(k))))
def test_agreement_is_symmetric(pair):
    a, b = pair
    assert pairwise_agreement(a, b) == pairwise_agreement(b, a)
    assert 0.0 <= pairwise_agreement(a, b) <= 1.0
    np.testing.assert_allclose(kendall_tau_b(a, b), kendall_tau_b(b, a), rtol=1e-12)



@given(st.integers(MIN_K, MAX_K).flatmap(lambda k: st.tuples(rank_lists(k), rank_lists(k))))
def test_kendall_tau_b_is_scipys(pair):
    """Ties and all: the same figure as scipy.stats.kendalltau's tau-b (nan where it is nan)."""
    a, b = pair
    expected = stats.kendalltau(a, b, variant="b").statistic
    np.testing.assert_allclose(kendall_tau_b(a, b), expected, rtol=1e-12, equal_nan=True)


# --- consensus ---------------------------------------------------------------------------


def test_pairwise_wins_leaves_ties_to_neither_side():
    # A > B = C and B > A > C: A over B once, B over A once, A over C twice, B over C once.
    wins = pairwise_wins([[1, 2, 2], [2, 1, 3]])
    np.testing.assert_array_equal(wins, [[0, 1, 2], [1, 0, 1], [0, 0, 0]])


def test_ranked_pairs_breaks_a_condorcet_cycle_at_its_weakest_majority():
    # 3 x A > B > C, 2 x B > C > A, 2 x C > A > B:
    # A over B: 3 + 2 = 5 vs 2 (margin 3); B over C: 3 + 2 = 5 vs 2 (margin 3);
    # C over A: 2 + 2 = 4 vs 3 (margin 1) -> a cycle A > B > C > A.
    # Lock A > B and B > C (margin 3); C > A would close the cycle and is skipped.
    panel = [[1, 2, 3]] * 3 + [[3, 1, 2]] * 2 + [[2, 3, 1]] * 2
    locked = ranked_pairs_locks(panel)
    assert locked[0, 1] and locked[1, 2] and not locked[2, 0]
    assert consensus(panel, "ranked_pairs") == [1, 2, 3]


def test_ranked_pairs_leaves_a_cycle_of_equal_majorities_tied():
    # A > B > C, B > C > A, C > A > B: every majority is 2 to 1, so no completion is
    # better than another without choosing among equal majorities by shown order.
    panel = [[1, 2, 3], [3, 1, 2], [2, 3, 1]]
    assert consensus(panel, "ranked_pairs") == [1, 1, 1]


def test_ranked_pairs_follows_the_condorcet_winner_and_majorities_where_borda_does_not():
    # The panel from OpenAssistant's ranked_pairs docstring, completions w, x, y, z:
    # 3 x w>x>z>y, 2 x w>y>x>z, 4 x x>y>z>w, 5 x x>z>w>y, 1 x y>w>x>z.
    # Pairwise: x beats w 9-6, y 12-3, z 15-0 (the Condorcet winner); w beats y 10-5;
    # z beats w 9-6 and y 8-7. Margins: x>z 15, x>y 9, w>y 5, x>w 3, z>w 3, z>y 1,
    # all lock without a cycle: x > z > w > y.
    # Borda (points 3, 2, 1, 0 by place): w 3*3 + 2*3 + 0 + 5*1 + 1*2 = 22, x 36, y 15,
    # z 17: x > w > z > y, which puts w over z although 9 of 15 prefer z.
    def rank_list(order: str) -> list[int]:
        return [order.index(name) + 1 for name in "wxyz"]

    panel = (
        [rank_list("wxzy")] * 3 + [rank_list("wyxz")] * 2 + [rank_list("xyzw")] * 4
        + [rank_list("xzwy")] * 5 + [rank_list("ywxz")]
    )
    np.testing.assert_array_equal(borda_scores(panel), [22, 36, 15, 17])
    assert consensus(panel, "ranked_pairs") == [3, 1, 4, 2]
    assert consensus(panel, "borda") == [2, 1, 4, 3]


def test_ranked_pairs_ties_completions_without_a_majority():
    assert consensus([[1, 2], [2, 1]], "ranked_pairs") == [1, 1]


def test_borda_averages_points_over_ties():
    # A > B = C: A 2 points, B and C share places 2 and 3: (1 + 0) / 2 = 0.5 each.
    # B > A > C: A 1, B 2, C 0.                  Totals: A 3, B 2.5, C 0.5.
    np.testing.assert_array_equal(borda_scores([[1, 2, 2], [2, 1, 3]]), [3.0, 2.5, 0.5])
    assert consensus([[1, 2, 2], [2, 1, 3]], "borda") == [1, 2, 3]
    # A > B = C and B > A = C: A 2 + 0.5, B 0.5 + 2, C 0.5 + 0.5 -> A = B > C.
    assert consensus([[1, 2, 2], [2, 1, 2]], "borda") == [1, 1, 2]


def test_bradley_terry_of_two_completions_is_the_win_ratio():
    # A > B twice, B > A once, plus 0.1 virtual ties per ranking (3 * 0.05 wins each):
    # with two completions the MLE odds g_A / g_B are W_A / W_B = 2.15 / 1.15.
    strengths = bradley_terry_strengths([[1, 2], [1, 2], [2, 1]])
    assert strengths[0] / strengths[1] == pytest.approx(2.15 / 1.15, rel=1e-9)
    assert np.prod(strengths) == pytest.approx(1.0)


def test_bradley_terry_stays_finite_and_quick_for_a_large_unanimous_panel():
    # 1 and 500 annotators all ranking A > B > ... > H: the prior grows with the panel,
    # so both get the same finite strengths.
    one = bradley_terry_strengths([list(range(1, 9))])
    many = bradley_terry_strengths([list(range(1, 9))] * 500)
    assert np.all(np.isfinite(many)) and np.all(np.diff(many) < 0)
    np.testing.assert_allclose(many, one, rtol=1e-8)


def test_bradley_terry_needs_a_positive_prior():
    with pytest.raises(ValueError, match="prior_ties must be positive"):
        bradley_terry_strengths([[1, 2]], prior_ties=0.0)


def test_bradley_terry_recovers_plackett_luce_strengths():
    # Plackett-Luce rankings, sampled by sorting log-strength plus Gumbel noise
    # (Yellott 1977); their pairwise marginals are exactly Bradley-Terry (Luce 1959).
    true_strengths = np.array([1.0, 8.0, 2.0, 4.0])  # order B > D > C > A
    rng = np.random.default_rng(0)
    noisy = np.log(true_strengths) + rng.gumbel(size=(3000, len(true_strengths)))
    panel = [[int(rank) for rank in row] for row in (-noisy).argsort(axis=1).argsort(axis=1) + 1]
    assert consensus(panel, "bradley_terry") == [4, 1, 3, 2]
    fitted = bradley_terry_strengths(panel, prior_ties=0.001)  # 3 virtual ties per pair
    np.testing.assert_allclose(fitted / fitted[0], true_strengths, rtol=0.1)


def test_bradley_terry_order_matches_borda_order():
    # Every ranking compares every pair once, so strengths follow wins (Zermelo 1929).
    panel = [[1, 2, 2, 3], [2, 1, 3, 3], [1, 3, 2, 4], [4, 3, 2, 1]]
    assert consensus(panel, "bradley_terry") == consensus(panel, "borda") == [1, 2, 3, 4]


def test_consensus_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="ranked_pairs, borda, bradley_terry"):
        consensus([[1, 2]], "kemeny")


@pytest.mark.parametrize("method", CONSENSUS_METHODS)
@given(ranking=rank_lists())
def test_consensus_of_one_ranking_is_that_ranking(method, ranking):
    assert consensus([ranking], method) == ranking


@pytest.mark.parametrize("method", CONSENSUS_METHODS)
@given(panel=ranking_panels(), data=st.data())
def test_consensus_does_not_depend_on_the_shown_order(method, panel, data):
    k = len(panel[0])
    order = data.draw(st.permutations(range(k)))
    reordered = [[ranking[position] for position in order] for ranking in panel]
    expected = consensus(panel, method)
    assert consensus(reordered, method) == [expected[position] for position in order]


# --- Krippendorff's alpha ----------------------------------------------------------------


def test_krippendorff_alpha_reproduces_the_published_ordinal_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
    # 4 observers, 12 units, missing values; the paper gives ordinal alpha = 0.815.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [list(unit) for unit in zip(*observers)]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(0.815, abs=5e-4)


def test_krippendorff_alpha_two_coders_by_hand():
    # Units (1, 1), (1, 2), (2, 2), (3, 3); each unit has m_u = 2, weight 1 / (m_u - 1) = 1.
    # Coincidences: o11 = 2, o12 = o21 = 1, o22 = 2, o33 = 2; margins n1 = 3, n2 = 3,
    # n3 = 2, n = 8.
    # Ordinal d_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2:
    # d12 = (6 - 3)^2 = 9, d13 = (8 - 2.5)^2 = 30.25, d23 = (5 - 2.5)^2 = 6.25.
    # Observed: sum o d = 2 * 1 * 9 = 18.
    # Expected: sum n_c n_k d = 2 * (3*3*9 + 3*2*30.25 + 3*2*6.25) = 600.
    # alpha = 1 - (n - 1) * 18 / 600 = 1 - 7 * 18 / 600 = 0.79
    units = [[1, 1], [1, 2], [2, 2], [3, 3]]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(0.79)
    # A unit one coder left blank is not pairable and changes nothing; nan is missing too.
    assert krippendorff_alpha_ordinal([*units, [4, None], [float("nan"), 1]]) == pytest.approx(0.79)


def test_krippendorff_alpha_is_one_for_perfect_agreement():
    assert krippendorff_alpha_ordinal([[1, 1, 1], [2, 2, None], [3, 3, 3]]) == 1.0


def test_krippendorff_alpha_is_nan_without_pairable_units_or_variation():
    assert math.isnan(krippendorff_alpha_ordinal([[1, None], [None, 2]]))
    assert math.isnan(krippendorff_alpha_ordinal([[2, 2], [2, 2]]))
    assert math.isnan(krippendorff_alpha_ordinal([]))


# --- annotator agreement over a data set --------------------------------------------------


def rankings_frame(rows: list[tuple[int, str, str, int]]) -> pd.DataFrame:
    """comparison_id, user, rank_list from (comparison_id, user, ranking text, K)."""
    return pd.DataFrame(
        [(comparison_id, user, ranks(text, k)) for comparison_id, user, text, k in rows],
        columns=["comparison_id", "user", "rank_list"],
    )


def test_annotator_agreement_by_hand():
    frame = rankings_frame([
        (1, "ann", "A > B > C", 3),
        (1, "bob", "A > B > C", 3),
        (1, "cy", "B > A > C", 3),
        (2, "ann", "A > B", 2),
        (2, "bob", "B > A", 2),
        (3, "ann", "A = B > C", 3),  # one annotator only: not overlapped
    ])
    result = annotator_agreement(frame)
    assert result["items"] == 2
    # Comparison 1: ann-bob agree on 3/3 pairs (tau 1); ann-cy and bob-cy on AC, BC but
    # not AB: 2/3, tau (2 - 1) / 3 = 1/3. Comparison 2: ann-bob 0/1, tau -1.
    # Means over the four annotator pairs: (1 + 2/3 + 2/3 + 0) / 4 = 7/12,
    # (1 + 1/3 + 1/3 - 1) / 4 = 1/6.
    assert result["pairwise_agreement"] == pytest.approx(7 / 12)
    assert result["kendall_tau_b"] == pytest.approx(1 / 6)
    # Consensus 1: margins A>B 1, A>C 3, B>C 3 -> A > B > C. Consensus 2: 1 to 1 -> A = B,
    # so tau to it is undefined and left out of the means.
    # ann and bob: tau 1 on comparison 1; cy: tau([2, 1, 3], [1, 2, 3]) = 1/3.
    per_annotator = result["per_annotator"]
    assert per_annotator["user"].tolist() == ["ann", "bob", "cy"]
    assert per_annotator["items"].tolist() == [2, 2, 1]
    np.testing.assert_allclose(per_annotator["tau_b_to_consensus"], [1.0, 1.0, 1 / 3])
    # Units (comparison, letter) x coders (ann, bob, cy):
    # 1A (1, 1, 2), 1B (2, 2, 1), 1C (3, 3, 3), 2A (1, 2, -), 2B (2, 1, -).
    # Coincidences: o11 = 1, o12 = o21 = 1 + 1 + 1 + 1 = 4, o22 = 1, o33 = 3 (weights 1/2
    # for the three-coder units, 1 for the two-coder ones); n1 = 5, n2 = 5, n3 = 3, n = 13.
    # d12 = (10 - 5)^2 = 25, d13 = (13 - 4)^2 = 81, d23 = (8 - 4)^2 = 16.
    # Observed 2 * 4 * 25 = 200; expected 2 * (5*5*25 + 5*3*81 + 5*3*16) = 4160.
    # alpha = 1 - 12 * 200 / 4160 = 11/26
    assert result["krippendorff_alpha"] == pytest.approx(11 / 26)
    # The per-round figures: the same three, without the consensus.
    assert pairwise_figures(frame) == {"items": 2, "pairwise_agreement": pytest.approx(7 / 12),
                                       "kendall_tau_b": pytest.approx(1 / 6)}


def test_annotator_agreement_without_overlap_is_nan():
    frame = rankings_frame([(1, "ann", "A > B", 2), (2, "bob", "B > A", 2)])
    result = annotator_agreement(frame)
    assert result["items"] == 0
    for figure in ("pairwise_agreement", "kendall_tau_b", "krippendorff_alpha"):
        assert math.isnan(result[figure])
    assert result["per_annotator"].empty
    assert result["per_annotator"].columns.tolist() == ["user", "items", "tau_b_to_consensus"]


def test_annotator_agreement_reads_rank_lists_stored_as_arrays():
    frame = pd.DataFrame({
        "comparison_id": [7, 7],
        "user": ["ann", "bob"],
        "rank_list": [np.array([1, 2, 2]), np.array([1, 2, 3])],
    })
    # AB, AC agree; BC tied vs ordered -> 2/3.
    assert annotator_agreement(frame, method="borda")["pairwise_agreement"] == pytest.approx(2 / 3)


# --- gold items -----------------------------------------------------------------------------


def test_gold_agreement_per_user():
    frame = rankings_frame([
        (1, "ann", "A > B > C", 3),  # exactly the gold ranking: 3/3
        (2, "ann", "A > B > C", 3),  # gold A = B > C: AB differs, AC and BC agree: 2/3
        (1, "bob", "C > B > A", 3),  # every pair reversed: 0/3
        (5, "bob", "A > B", 2),  # not a gold item
        (6, "cy", "B > A", 2),  # not a gold item
    ])
    gold = {1: [1, 2, 3], 2: [1, 1, 3]}  # gaps in gold ranks are fine
    result = gold_agreement(frame, gold)
    assert result.columns.tolist() == ["user", "gold_items", "pairwise_agreement", "exact_match"]
    assert result["user"].tolist() == ["ann", "bob", "cy"]
    assert result["gold_items"].tolist() == [2, 1, 0]
    # ann: (1 + 2/3) / 2 = 5/6, one exact match of two; bob: 0 and 0; cy: no gold items.
    np.testing.assert_allclose(result["pairwise_agreement"], [5 / 6, 0.0, np.nan])
    np.testing.assert_allclose(result["exact_match"], [0.5, 0.0, np.nan])


def test_gold_agreement_with_a_gold_ranking_of_the_wrong_length_fails():
    frame = rankings_frame([(1, "ann", "A > B > C", 3)])
    with pytest.raises(ValueError, match="different lengths"):
        gold_agreement(frame, {1: [1, 2]})
