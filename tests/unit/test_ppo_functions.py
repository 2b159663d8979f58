"""The arithmetic of PPO (rlhf.train.ppo_functions) against values worked out by hand,
and a few properties checked with hypothesis. No model: these run in a blink."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.modeling.generate import mask_through_first_eos
from rlhf.train.ppo_functions import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    entropy_from_logits,
    gae,
    kl_penalty_rewards,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    policy_loss,
    value_loss,
    whiten,
)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected, atol: float = 1e-9) -> None:
    torch.testing.assert_close(actual.to(torch.float64), t(expected), rtol=0, atol=atol)


# -- masked statistics ------------------------------------------------------------------

def test_masked_mean_counts_only_masked_positions():
    values = t([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1, 0, 1, 0]])
    close(masked_mean(values, mask), 2.0)                      # (1 + 3) / 2
    close(masked_mean(t([[1.0, 5.0], [2.0, 8.0]]), torch.tensor([[1, 1], [1, 0]]), dim=1), [3.0, 2.0])


def test_masked_mean_of_nothing_is_zero_not_nan():
    close(masked_mean(t([1.0, 2.0]), torch.tensor([0, 0])), 0.0)


def test_masked_var_is_unbiased():
    # values 2, 4, 6 (9 is masked out): mean 4, squared deviations 4 + 0 + 4 = 8, / (3 - 1) = 4
    close(masked_var(t([2.0, 4.0, 6.0, 9.0]), torch.tensor([1, 1, 1, 0])), 4.0)
    close(masked_var(t([2.0, 4.0, 6.0, 9.0]), torch.tensor([1, 1, 1, 0]), unbiased=False), 8.0 / 3)


# -- whitening --------------------------------------------------------------------------

def test_whiten_by_hand():
    # 1, 2, 3, 4: mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    sd = math.sqrt(5 / 3)
    whitened = whiten(t([[1.0, 2.0], [3.0, 4.0]]), torch.ones(2, 2))
    close(whitened, [[-1.5 / sd, -0.5 / sd], [0.5 / sd, 1.5 / sd]], atol=1e-6)  # rsqrt(var + 1e-8)


def test_whiten_ignores_and_zeroes_padding():
    # real values 2, 4, 6: mean 4, sd 2; the 100 is padding and must not move anything
    values, mask = t([[2.0, 4.0, 6.0, 100.0]]), torch.tensor([[1, 1, 1, 0]])
    close(whiten(values, mask), [[-1.0, 0.0, 1.0, 0.0]], atol=1e-6)
    # shift_mean=False scales only: (x - 4) / 2 + 4
    close(whiten(values, mask, shift_mean=False), [[3.0, 4.0, 5.0, 0.0]], atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=3, max_size=20).filter(lambda xs: max(xs) - min(xs) > 1e-2),
       st.integers(0, 5))
def test_whitened_values_have_mean_zero_and_unit_variance(values, padding):
    x = t([values + [1e6] * padding])
    mask = torch.tensor([[1] * len(values) + [0] * padding])
    whitened = whiten(x, mask)
    assert abs(float(masked_mean(whitened, mask))) < 1e-6
    assert abs(float(masked_var(whitened, mask)) - 1.0) < 1e-4
    assert float(whitened[mask == 0].abs().sum()) == 0.0


# -- log-probabilities ------------------------------------------------------------------

def test_logprobs_from_logits_by_hand():
    # logits 0 and ln 3 over two tokens: probabilities 1/4 and 3/4
    logits = t([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    close(logprobs_from_logits(logits, torch.tensor([[1, 0]])), [[math.log(0.75), math.log(0.25)]])


def test_entropy_of_uniform_and_certain_distributions():
    logits = t([[[0.0, 0.0, 0.0, 0.0], [50.0, -50.0, -50.0, -50.0]]])
    entropy = entropy_from_logits(logits)
    assert float(entropy[0, 0]) == pytest.approx(math.log(4.0))
    assert float(entropy[0, 1]) == pytest.approx(0.0, abs=1e-9)


# -- masks, EOS, penalties --------------------------------------------------------------

def test_mask_through_first_eos():
    # EOS = 2; generate pads after EOS with pad (= EOS for SmolLM2)
    ids = torch.tensor([[5, 2, 2], [5, 6, 7], [2, 9, 2]])
    mask, has_eos = mask_through_first_eos(ids, [2])
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert has_eos.tolist() == [True, False, True]
    mask, has_eos = mask_through_first_eos(torch.tensor([[5, 7, 6]]), [2, 7])
    assert mask.tolist() == [[1, 1, 0]] and has_eos.tolist() == [True]


def test_last_token_index():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert last_token_index(mask).tolist() == [1, 2, -1]


def test_missing_eos_penalty_replaces_the_score():
    scores, has_eos = t([0.3, 2.0, -4.0]), torch.tensor([True, False, False])
    close(apply_missing_eos_penalty(scores, has_eos, -1.0), [0.3, -1.0, -1.0])
    close(apply_missing_eos_penalty(scores, has_eos, None), [0.3, 2.0, -4.0])


# -- KL-penalised rewards ---------------------------------------------------------------

def test_kl_penalty_rewards_by_hand():
    scores = t([2.0, -1.0])
    logprobs = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref_logprobs = t([[-1.5, -2.0, -2.0], [-2.0, -0.5, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_penalty_rewards(scores, logprobs, ref_logprobs, 0.1, mask)
    # kl = logprobs - ref_logprobs on real tokens: row 0 [0.5, 0, -1], row 1 [1, -0.5, (padding) 0]
    close(kl, [[0.5, 0.0, -1.0], [1.0, -0.5, 0.0]])
    # rewards = -0.1 * kl, and the score lands on the last real token: index 2 of row 0,
    # index 1 of row 1; the padding at row 1, index 2 gets neither penalty nor score
    close(rewards, [[-0.05, 0.0, 0.1 + 2.0], [-0.1, 0.05 - 1.0, 0.0]])


def test_kl_penalty_with_zero_coefficient_is_the_score_alone():
    rewards, _ = kl_penalty_rewards(t([3.0]), t([[-1.0, -1.0, -1.0, -1.0]]), t([[-5.0, -5.0, -5.0, -5.0]]), 0.0,
                                    torch.tensor([[1, 1, 1, 0]]))
    close(rewards, [[0.0, 0.0, 3.0, 0.0]])


# -- GAE --------------------------------------------------------------------------------

def test_gae_three_steps_by_hand():
    # gamma 1, lambda 0.95, rewards 0, 0, 1 and values 0.5, 0.6, 0.7 (no value after the end):
    #   delta_2 = 1 + 0   - 0.7 = 0.3    A_2 = 0.3
    #   delta_1 = 0 + 0.7 - 0.6 = 0.1    A_1 = 0.1 + 0.95 * 0.3   = 0.385
    #   delta_0 = 0 + 0.6 - 0.5 = 0.1    A_0 = 0.1 + 0.95 * 0.385 = 0.46575
    # returns = A + V = 0.96575, 0.985, 1.0
    advantages, returns = gae(t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma=1.0, lam=0.95)
    close(advantages, [[0.46575, 0.385, 0.3]])
    close(returns, [[0.96575, 0.985, 1.0]])


def test_gae_with_discount_by_hand():
    # gamma 0.9, lambda 0.5 (gamma * lambda = 0.45), rewards 1, 0, 2, values 1, 2, 3:
    #   delta_2 = 2 + 0       - 3 = -1     A_2 = -1
    #   delta_1 = 0 + 0.9 * 3 - 2 = 0.7    A_1 = 0.7 + 0.45 * -1   = 0.25
    #   delta_0 = 1 + 0.9 * 2 - 1 = 1.8    A_0 = 1.8 + 0.45 * 0.25 = 1.9125
    advantages, returns = gae(t([[1.0, 0.0, 2.0]]), t([[1.0, 2.0, 3.0]]), torch.ones(1, 3), gamma=0.9, lam=0.5)
    close(advantages, [[1.9125, 0.25, -1.0]])
    close(returns, [[2.9125, 2.25, 2.0]])


def test_gae_stops_at_the_last_real_token():
    # row 0 as in the three-step example plus a padding column whose reward and value
    # must change nothing; row 1 ends after two tokens:
    #   delta_1 = 1 + 0 - 0.6 = 0.4 -> A_1 = 0.4;  delta_0 = 0 + 0.6 - 0.5 = 0.1 -> A_0 = 0.1 + 0.95 * 0.4 = 0.48
    rewards = t([[0.0, 0.0, 1.0, 5.0], [0.0, 1.0, 7.0, 7.0]])
    values = t([[0.5, 0.6, 0.7, 9.0], [0.5, 0.6, 8.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(advantages, [[0.46575, 0.385, 0.3, 0.0], [0.48, 0.4, 0.0, 0.0]])
    close(returns, [[0.96575, 0.985, 1.0, 0.0], [0.98, 1.0, 0.0, 0.0]])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=1, max_size=12))
def test_gae_limits_are_monte_carlo_and_td(steps):
    rewards, values = t([[r for r, _ in steps]]), t([[v for _, v in steps]])
    mask = torch.ones_like(rewards)
    # lambda = 1, gamma = 1: A_t = (sum of rewards from t on) - V_t, returns = the rewards-to-go
    to_go = torch.flip(torch.cumsum(torch.flip(rewards, [1]), 1), [1])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, to_go - values)
    torch.testing.assert_close(returns, to_go)
    # lambda = 0: A_t = r_t + gamma * V_{t+1} - V_t (one-step TD error, V = 0 after the end)
    next_values = torch.cat([values[:, 1:], torch.zeros(1, 1, dtype=values.dtype)], dim=1)
    advantages, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    torch.testing.assert_close(advantages, rewards + 0.9 * next_values - values)


# -- the clipped losses -----------------------------------------------------------------

def test_policy_loss_clipping_by_hand():
    old = t([[0.0, 0.0, 0.0, 0.0, 0.0]])
    # ratios 1.5, 0.5, 1.1, 1.5 and a padding token with a wild ratio
    new = torch.log(t([[1.5, 0.5, 1.1, 1.5, 100.0]])).requires_grad_(True)
    advantages = t([[1.0, -1.0, 1.0, -1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clipfrac, approx_kl = policy_loss(new, old, advantages, mask, cliprange=0.2)
    # per token max(-A * r, -A * clip(r, 0.8, 1.2)):
    #   r 1.5, A  1: max(-1.5, -1.2) = -1.2  clipped -> no gradient
    #   r 0.5, A -1: max( 0.5,  0.8) =  0.8  clipped -> no gradient
    #   r 1.1, A  1: max(-1.1, -1.1) = -1.1  inside the range: gradient -A * r = -1.1
    #   r 1.5, A -1: max( 1.5,  1.2) =  1.5  the unclipped term is the pessimistic one: gradient 1.5
    # mean over 4 real tokens: (-1.2 + 0.8 - 1.1 + 1.5) / 4 = 0; clipped on 2 of 4
    close(loss, 0.0)
    close(clipfrac, 0.5)
    close(approx_kl, 0.5 * (math.log(1.5) ** 2 * 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 4)
    loss.backward()
    close(new.grad, [[0.0, 0.0, -1.1 / 4, 1.5 / 4, 0.0]])


def test_policy_loss_at_ratio_one_is_minus_the_mean_advantage():
    logprobs = t([[-1.0, -2.0, -3.0]])
    loss, clipfrac, approx_kl = policy_loss(logprobs, logprobs.clone(), t([[1.0, 2.0, 6.0]]), torch.ones(1, 3), 0.2)
    close(loss, -3.0)
    close(clipfrac, 0.0)
    close(approx_kl, 0.0)


def test_value_loss_clipping_by_hand():
    old = t([[0.0, 0.0, 0.0, 0.0, 0.0]])
    values = t([[0.5, 0.1, -0.5, 0.5, 3.0]]).requires_grad_(True)
    returns = t([[1.0, 1.0, -1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clipfrac = value_loss(values, old, returns, mask, cliprange_value=0.2)
    # per token max((V - R)^2, (V_clip - R)^2) with V_clip = clip(V, -0.2, 0.2):
    #   V  0.5, R  1: max(0.25, 0.64) = 0.64  clipped -> no gradient
    #   V  0.1, R  1: max(0.81, 0.81) = 0.81  inside: gradient 0.5 * 2 * (0.1 - 1) / 4
    #   V -0.5, R -1: max(0.25, 0.64) = 0.64  clipped -> no gradient
    #   V  0.5, R -1: max(2.25, 1.44) = 2.25  unclipped is worse: gradient 0.5 * 2 * (0.5 + 1) / 4
    # loss = 0.5 * (0.64 + 0.81 + 0.64 + 2.25) / 4; clipped on 2 of 4; padding ignored
    close(loss, 0.5 * (0.64 + 0.81 + 0.64 + 2.25) / 4)
    close(clipfrac, 0.5)
    loss.backward()
    close(values.grad, [[0.0, -0.9 / 4, 0.0, 1.5 / 4, 0.0]])


# -- KL coefficient ---------------------------------------------------------------------

def test_adaptive_kl_controller_by_hand():
    # KL 9 against target 6: error 9/6 - 1 = 0.5, clipped to 0.2; 8 rollouts of a 10000 horizon:
    # beta * (1 + 0.2 * 8 / 10000)
    controller = AdaptiveKLController(0.05, target=6.0, horizon=10000)
    assert controller.update(9.0, 8) == pytest.approx(0.05 * 1.00016)
    # KL 5.4: error 5.4/6 - 1 = -0.1 (inside the clip); 1000 rollouts: * (1 - 0.1 * 0.1) = * 0.99
    controller = AdaptiveKLController(0.05, target=6.0, horizon=10000)
    assert controller.update(5.4, 1000) == pytest.approx(0.05 * 0.99)
    # KL far below target: error clipped at -0.2; * (1 - 0.2 * 5000 / 10000) = * 0.9, twice
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    controller.update(0.0, 5000)
    assert controller.update(0.0, 5000) == pytest.approx(0.1 * 0.9 * 0.9)
    # on target: unchanged
    assert AdaptiveKLController(0.05, 6.0, 10000).update(6.0, 64) == pytest.approx(0.05)


def test_fixed_kl_controller_never_moves():
    controller = FixedKLController(0.05)
    assert controller.update(100.0, 8) == 0.05 and controller.value == 0.05


def test_adaptive_kl_controller_refuses_a_zero_target():
    with pytest.raises(ValueError, match="positive target"):
        AdaptiveKLController(0.05, target=0.0, horizon=10000)
