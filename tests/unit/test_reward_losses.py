"""The reward losses against values worked out by hand, and their limiting cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.train.reward_losses import (
    bradley_terry_loss,
    davidson_log_probabilities,
    davidson_loss,
    pair_loss,
    predicts_tie,
    ranked_pairs,
    rao_kupper_log_probabilities,
    rao_kupper_loss,
)

LOG3 = math.log(3.0)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.tolist() == pytest.approx(expected, abs=1e-9)


def test_bradley_terry_by_hand():
    # -log sigmoid(0) = log 2; -log sigmoid(1) = log(1 + e^-1); margin 1 on delta 1 is delta 0.
    close(bradley_terry_loss(t(0.0, 1.0, -1.0)), [math.log(2), math.log(1 + math.exp(-1)), math.log(1 + math.e)])
    close(bradley_terry_loss(t(1.0, 3.0), margin=t(1.0, 1.0)), [math.log(2), math.log(1 + math.exp(-2))])


def test_rao_kupper_by_hand():
    # theta = 3. Equal rewards: P(a > b) = 1 / (1 + 3) = 1/4, P(tie) = (9 - 1) / (4 * 4) = 1/2.
    win, tie, lose = rao_kupper_log_probabilities(t(0.0), 3.0)
    close(win.exp(), [0.25]), close(tie.exp(), [0.5]), close(lose.exp(), [0.25])
    # r_a - r_b = log 3, so pi_a = 3 pi_b: P(a > b) = 3 / (3 + 3) = 1/2,
    # P(b > a) = 1 / (1 + 9) = 1/10, P(tie) = 8 * 3 / (6 * 10) = 2/5.
    win, tie, lose = rao_kupper_log_probabilities(t(LOG3), 3.0)
    close(win.exp(), [0.5]), close(tie.exp(), [0.4]), close(lose.exp(), [0.1])
    loss = rao_kupper_loss(t(0.0, 0.0, LOG3), torch.tensor([False, True, True]), 3.0)
    close(loss, [math.log(4), math.log(2), -math.log(0.4)])


def test_davidson_by_hand():
    # nu = 2. Equal rewards: P(a > b) = 1 / (1 + 1 + 2) = 1/4, P(tie) = 2/4.
    win, tie, lose = davidson_log_probabilities(t(0.0), 2.0)
    close(win.exp(), [0.25]), close(tie.exp(), [0.5]), close(lose.exp(), [0.25])
    # pi_a = 4 pi_b (delta = log 4): sqrt(pi_a pi_b) = 2 pi_b; denominator 4 + 1 + 2 * 2 = 9.
    win, tie, lose = davidson_log_probabilities(t(math.log(4)), 2.0)
    close(win.exp(), [4 / 9]), close(tie.exp(), [4 / 9]), close(lose.exp(), [1 / 9])
    loss = davidson_loss(t(math.log(4), math.log(4)), torch.tensor([False, True]), 2.0)
    close(loss, [-math.log(4 / 9), -math.log(4 / 9)])


def test_margin_only_shifts_strict_pairs():
    tie = torch.tensor([False, True])
    for loss in (rao_kupper_loss, davidson_loss):
        shifted = loss(t(2.0, 0.5), tie, 3.0, margin=t(1.0, 1.0))
        close(shifted, loss(t(1.0, 0.5), tie, 3.0).tolist())


def test_pair_loss_dispatch_and_bradley_terry_refuses_ties():
    delta, none_tied = t(0.3, -0.2), torch.tensor([False, False])
    close(pair_loss("bradley_terry", delta, none_tied), bradley_terry_loss(delta).tolist())
    close(pair_loss("davidson", delta, none_tied, 2.0), davidson_loss(delta, none_tied, 2.0).tolist())
    with pytest.raises(ValueError, match="tie"):
        pair_loss("bradley_terry", delta, torch.tensor([True, False]))
    with pytest.raises(ValueError, match="loss must be"):
        pair_loss("thurstone", delta, none_tied)


def test_learned_tie_parameter_gets_a_gradient():
    rho = torch.tensor(math.log(2.0), requires_grad=True)
    loss = rao_kupper_loss(t(0.0).float(), torch.tensor([True]), 1 + rho.exp()).sum()
    loss.backward()
    # More ties than P(tie) = 1/2 explains at equal rewards: theta should grow.
    assert rho.grad is not None and rho.grad.item() < 0


def test_predicts_tie_thresholds():
    # Davidson: a tie is the likeliest outcome exactly when |delta| < 2 log nu.
    nu = 2.0
    edge = 2 * math.log(nu)
    assert predicts_tie("davidson", t(0.0, edge - 1e-6, edge + 1e-6, -edge + 1e-6), nu).tolist() == [
        True, True, False, True]
    # Rao-Kupper with theta = 1.5 (P(tie) = 1/5 at best) or Bradley-Terry never predict a tie.
    assert not predicts_tie("rao_kupper", t(0.0, 0.1), 1.5).any()
    assert not predicts_tie("bradley_terry", t(0.0), None).any()
    assert predicts_tie("rao_kupper", t(0.0, 5.0), 3.0).tolist() == [True, False]


def test_ranked_pairs_of_a_ranking_with_ties():
    # C > B = D > A as ranks in shown order A, B, C, D: better first, rank distance as margin.
    ranks = [3, 2, 1, 2]
    assert ranked_pairs(ranks, keep_ties=True) == [
        (1, 0, 1, False), (2, 0, 2, False), (3, 0, 1, False), (2, 1, 1, False), (1, 3, 0, True), (2, 3, 1, False)]
    assert ranked_pairs(ranks, keep_ties=False) == [
        (1, 0, 1, False), (2, 0, 2, False), (3, 0, 1, False), (2, 1, 1, False), (2, 3, 1, False)]
    assert ranked_pairs([1, 1, 1], keep_ties=False) == []
    assert len(ranked_pairs([1, 1, 1], keep_ties=True)) == 3


deltas = st.floats(min_value=-20, max_value=20, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(delta=deltas, margin=st.floats(min_value=0, max_value=3))
def test_rao_kupper_with_theta_one_is_bradley_terry(delta, margin):
    strict = torch.tensor([False])
    close(rao_kupper_loss(t(delta), strict, 1.0, margin=margin), bradley_terry_loss(t(delta), margin).tolist())


@settings(max_examples=50, deadline=None)
@given(delta=deltas)
def test_davidson_tends_to_bradley_terry_as_nu_vanishes(delta):
    strict = torch.tensor([False])
    assert davidson_loss(t(delta), strict, 1e-12).item() == pytest.approx(bradley_terry_loss(t(delta)).item(),
                                                                          abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(delta=deltas, theta=st.floats(min_value=1.01, max_value=50), nu=st.floats(min_value=0.01, max_value=50))
def test_outcome_probabilities_sum_to_one_and_are_symmetric(delta, theta, nu):
    for log_probabilities, param in ((rao_kupper_log_probabilities, theta), (davidson_log_probabilities, nu)):
        win, tie, lose = log_probabilities(t(delta), param)
        assert (win.exp() + tie.exp() + lose.exp()).item() == pytest.approx(1.0, abs=1e-9)
        mirrored_win, mirrored_tie, _ = log_probabilities(t(-delta), param)
        assert mirrored_win.item() == pytest.approx(lose.item(), abs=1e-9)
        assert mirrored_tie.item() == pytest.approx(tie.item(), abs=1e-9)
        assert torch.isfinite(tie).all()
