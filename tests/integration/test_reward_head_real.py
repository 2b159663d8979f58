"""The feature-based reward model on the real default model learns a simulated annotator's
preference (longer is better, `rlhf.simulate.rules.Longer`) from rankings it has never seen
the held-out half of, in seconds: a no-op head (every score equal) has accuracy 0 here and
a coin 0.5."""

from __future__ import annotations

import random
import time

import pandas as pd
import pytest

from rlhf.modeling.scoring import RewardScorer
from rlhf.simulate.rules import Longer
from rlhf.train import common
from rlhf.train.methods import resolve
from rlhf.train.reward_head import train

SENTENCES = ["It is a common question.", "Many people ask it.", "The answer depends on the case.",
             "Start with the basics.", "Practice helps a lot.", "Ask a friend who knows.", "Read the manual first.",
             "Take notes as you go.", "Small steps work best.", "Check the result twice."]
TOPICS = ["baking bread", "learning chess", "fixing a bike", "growing tomatoes", "writing letters",
          "painting walls", "running a marathon", "keeping bees", "sailing", "playing piano"]


def length_rankings(n: int, seed: int) -> pd.DataFrame:
    """`n` comparisons of three answers of one to five sentences, ranked by `Longer`."""
    rng, annotator = random.Random(seed), Longer()
    rows = []
    for i in range(n):
        prompt = [{"role": "system", "content": "Be brief."},   # not the template's longer default
                  {"role": "user", "content": f"How do I get better at {rng.choice(TOPICS)}?"}]
        sizes = rng.sample(range(1, 6), 3)
        texts = [" ".join(rng.sample(SENTENCES, size)) for size in sizes]
        rows.append({"ranking_id": i, "comparison_id": i, "prompt": prompt, "completions": texts,
                     "ranking": annotator.rank(prompt, texts), "user": "sim", "model_versions": ["base"] * 3})
    return pd.DataFrame(rows)


@pytest.mark.integration
def test_real_model_head_learns_a_length_preference_on_held_out_rankings(real_model_dir, tmp_path, one_thread):
    config, options = resolve("reward_head", {"eval_fraction": 0.5})
    started = time.monotonic()
    out = tmp_path / "model"
    metrics = train(common.TrainInputs(length_rankings(40, seed=0), real_model_dir, out, config, options))
    elapsed = time.monotonic() - started

    assert metrics["eval/pairs"] >= 60
    assert metrics["eval/accuracy"] >= 0.8, metrics
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I get better at knitting?"}]
    short, long = RewardScorer(out).score([prompt, prompt], [SENTENCES[0], " ".join(SENTENCES[:5])])
    assert long > short
    print(f"trained and evaluated in {elapsed:.0f} s (fit {metrics['train/fitting_seconds']} s): {metrics}")
