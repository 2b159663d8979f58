"""Double Thompson sampling over candidates and the bootstrap ensemble of reward heads, on
hand-made scores and features whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf.preference.thompson import Candidates, Ranked, double_thompson, random_slots
from rlhf.train.head_ensemble import EnsembleConfig, Featurizer, bootstrap_rows, choose_shown, fit_ensemble, member_scores
from rlhf.train.reward_head import HeadConfig, PairTable


def test_an_ensemble_that_agrees_picks_the_top_candidates_best_first():
    scores = np.tile([3.0, 1.0, 4.0, 1.5, 9.0, 2.0], (5, 1))
    assert double_thompson(scores, 3, np.random.default_rng(0)) == [4, 2, 0]


def test_two_members_that_disagree_show_both_favourites():
    scores = np.array([[5.0, 0.0, 1.0, 2.0], [0.0, 5.0, 1.0, 2.0]])
    for seed in range(20):
        assert sorted(double_thompson(scores, 2, np.random.default_rng(seed))) == [0, 1]


def test_the_first_pick_follows_the_drawn_member():
    """Member 0 prefers candidate 0, members 1-3 candidate 1: the first slot is candidate 0
    in about a quarter of the draws (the member is drawn uniformly)."""
    scores = np.array([[5.0, 0.0, 0.0]] + [[0.0, 5.0, 0.0]] * 3)
    firsts = [double_thompson(scores, 1, np.random.default_rng(seed))[0] for seed in range(2000)]
    assert firsts.count(0) / len(firsts) == pytest.approx(0.25, abs=0.03)


def test_seeded_draws_are_reproducible_and_never_repeat_a_candidate():
    scores = np.random.default_rng(7).normal(size=(6, 8))
    for seed in range(50):
        picked = double_thompson(scores, 4, np.random.default_rng(seed))
        assert picked == double_thompson(scores, 4, np.random.default_rng(seed))
        assert len(set(picked)) == 4 and all(0 <= i < 8 for i in picked)
    assert sorted(double_thompson(scores, 8, np.random.default_rng(1))) == list(range(8))


def test_random_slots_are_distinct_and_seeded():
    assert random_slots(8, 4, np.random.default_rng(3)) == random_slots(8, 4, np.random.default_rng(3))
    assert sorted(random_slots(5, 5, np.random.default_rng(0))) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("k,shape", [(5, (2, 4)), (0, (2, 4))])
def test_more_slots_than_candidates_is_refused(k, shape):
    with pytest.raises(ValueError, match="Cannot pick"):
        double_thompson(np.zeros(shape), k, np.random.default_rng(0))


def test_bootstrap_rows_draw_with_replacement_from_the_pairs():
    rows = bootstrap_rows(10, torch.Generator().manual_seed(0))
    assert rows.shape == (10,) and int(rows.min()) >= 0 and int(rows.max()) < 10
    assert torch.equal(rows, bootstrap_rows(10, torch.Generator().manual_seed(0)))
    assert len(set(rows.tolist())) < 10  # 10 draws from 10 repeat one with probability 1 - 10!/10^10


def _pairs_by(order_key: np.ndarray) -> PairTable:
    """Every pair of rows, the one with the larger key first."""
    first, second = [], []
    for i in range(len(order_key)):
        for j in range(len(order_key)):
            if order_key[i] > order_key[j]:
                first.append(i)
                second.append(j)
    return PairTable(torch.tensor(first), torch.tensor(second), torch.ones(len(first)),
                     torch.zeros(len(first), dtype=torch.bool))


def test_every_member_learns_what_the_pairs_prefer():
    """Feature 0 decides every preference, feature 1 is noise: each member's weight on
    feature 0 is positive and the agreeing ensemble shows the largest feature 0 first."""
    rng = np.random.default_rng(0)
    features = np.stack([np.linspace(-2, 2, 12), rng.normal(size=12)], axis=1).astype(np.float32)
    weights = fit_ensemble(features, _pairs_by(features[:, 0]), members=4, config=HeadConfig(max_steps=200))
    assert weights.shape == (4, 2) and bool((weights[:, 0] > 0).all())
    assert bool((weights[:, 0] > weights[:, 1].abs()).all())
    candidates = np.array([[0.5, 0.0], [1.5, 0.0], [-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    scores = member_scores(weights, candidates)
    assert scores.shape == (4, 4)
    assert double_thompson(scores, 2, np.random.default_rng(0)) == [1, 3]


def test_members_differ_and_the_fit_is_reproducible():
    features = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    pairs = _pairs_by(features[:, 0] + features[:, 1])
    weights = fit_ensemble(features, pairs, members=3, config=HeadConfig(max_steps=50), seed=5)
    assert torch.equal(weights, fit_ensemble(features, pairs, members=3, config=HeadConfig(max_steps=50), seed=5))
    assert not torch.allclose(weights[0], weights[1])


def test_an_empty_ensemble_or_no_pairs_is_refused():
    features = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="at least one member"):
        fit_ensemble(features, _pairs_by(np.array([1.0, 0.0])), members=0)
    with pytest.raises(ValueError, match="at least one pair"):
        fit_ensemble(features, _pairs_by(np.array([0.0, 0.0])), members=2)


def test_choose_shown_falls_back_to_random_until_there_are_enough_rankings(tiny_model_dir, tmp_path):
    featurizer = Featurizer(tiny_model_dir, tmp_path / "features")
    prompt = [{"role": "user", "content": "Say something."}]
    ranked = [Ranked(prompt, ["Yes.", "No, never.", "Perhaps later today."], [3, 2, 1])] * 3
    candidates = [Candidates(prompt, ["a", "bb", "ccc", "dddd", "eeeee"])] * 2
    config = EnsembleConfig(members=3, min_rankings=3, head=HeadConfig(max_steps=20))

    shown, fitted = choose_shown(featurizer, ranked[:2], candidates, 3, config, seed=0)
    assert not fitted and all(len(set(s)) == 3 for s in shown)
    shown, fitted = choose_shown(featurizer, ranked, candidates, 3, config, seed=0)
    assert fitted and all(len(set(s)) == 3 and max(s) < 5 for s in shown)
    assert (shown, fitted) == choose_shown(featurizer, ranked, candidates, 3, config, seed=0)
    assert any((tmp_path / "features").rglob("*.npy"))  # through the reward head's cache


# -- the queue's 'thompson' selection --------------------------------------------------------------

from rlhf.collect.annotation import Annotation  # noqa: E402
from rlhf.collect.workbench import WorkbenchError  # noqa: E402
from helpers import RESEARCHER  # noqa: E402


def test_bad_thompson_settings_are_refused_in_one_sentence(workbench):
    annotation = Annotation(workbench)
    before = annotation.config
    with pytest.raises(WorkbenchError, match="candidates must be more than 4, not 4"):
        annotation.set_config(RESEARCHER, selection="thompson", candidates=4)
    with pytest.raises(WorkbenchError, match="candidates must be"):
        annotation.set_config(RESEARCHER, selection="thompson", candidates=9)
    with pytest.raises(WorkbenchError, match="clear `sources` first"):
        annotation.set_config(RESEARCHER, selection="thompson",
                              sources=[{"version": "base", "count": 2}, {"version": "base", "count": 1}])
    assert annotation.config == before
    assert annotation.set_config(RESEARCHER, selection="thompson").candidates == 8


class FakeChild:
    """The sampler child's two calls, without a model: M numbered texts per conversation,
    and the first K of them chosen, 'not fitted' (random picks)."""

    def sample(self, model_dir, conversations, m, params):
        from rlhf.modeling.generate import Sample

        return [[Sample(f"candidate {j} of {n}", 3, "eos") for j in range(m)] for n, _ in enumerate(conversations)]

    def choose(self, base_dir, cache_root, ranked, candidates, k, seed):
        return [list(range(k)) for _ in candidates], False


def thompson_config(annotation):
    return annotation.set_config(RESEARCHER, selection="thompson", candidates=5, k=3, max_new_tokens=4, gold_rate=0.0)


def test_a_thompson_batch_stores_its_comparisons_and_their_unshown_candidates_together(workbench):
    from rlhf.collect.candidates import thompson_batch
    from rlhf.collect.pregenerate import queue_batch, queue_plan
    from storage import queue

    annotation = Annotation(workbench)
    config = thompson_config(annotation)
    made, note = thompson_batch(annotation, config, *queue_plan(annotation, config), 2, FakeChild(), queue_batch)
    assert len(made) == 2 and "too few" in note
    for comparison_id in made:
        kept = queue.unshown(workbench.store.cursor(), comparison_id)
        assert kept["position"].tolist() == [3, 4] and set(kept["chosen_by"]) == {"random"}


def test_a_thompson_batch_whose_unshown_candidates_fail_leaves_no_comparison(workbench, monkeypatch):
    """One transaction: a comparison is never stored without its unshown candidates (with
    two, the comparisons were committed before the candidates failed)."""
    from rlhf.collect.candidates import thompson_batch
    from rlhf.collect.pregenerate import queue_batch, queue_plan
    from storage import queue

    def broken(*args):
        raise OSError("disk full")

    annotation = Annotation(workbench)
    config = thompson_config(annotation)
    before = len(workbench.comparisons())
    monkeypatch.setattr(queue, "add_unshown", broken)
    with pytest.raises(OSError, match="disk full"):
        thompson_batch(annotation, config, *queue_plan(annotation, config), 2, FakeChild(), queue_batch)
    assert len(workbench.comparisons()) == before
