"""The feature-based reward model as a job (worker, registration, lineage, scoring through
the registered version) on the tiny model, and on the real default model learning a
simulated annotator's preference (longer is better, `rlhf.simulate.rules.Longer`) on
held-out rankings: a no-op head (every score equal) has accuracy 0 there and a coin 0.5."""

from __future__ import annotations

import random
import time

import pandas as pd
import pytest

from rlhf.jobs.runner import JobRunner
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.modeling.scoring import RewardScorer
from rlhf.simulate.rules import Longer
from rlhf.train import common
from rlhf.train.methods import resolve
from rlhf.train.reward_head import train
from storage import comparisons, models
from storage.comparisons import NewCompletion

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


def test_a_reward_head_job_registers_a_reward_version_that_scores(workbench):
    with workbench.store.transaction() as cur:
        prompt_ids = [r[0] for r in cur.execute("SELECT id FROM prompts ORDER BY id LIMIT 6").fetchall()]
        ids = [comparisons.add(cur, pid, [NewCompletion(" ".join(SENTENCES[:n]), "base") for n in (1, 3, 5)])
               for pid in prompt_ids]
    for comparison_id in ids:
        workbench.rank(comparison_id, "C > B > A", "ana")
    jobs = Jobs(workbench.home, workbench.store)
    job = JobRunner(jobs).run(jobs.submit(JobRequest("reward_head", settings={"max_steps": 20}, created_by="ana")))
    assert job["status"] == "succeeded", jobs.log_text(job["id"])

    version = workbench.model_version(job["output_version"])
    row = models.get(workbench.store.cursor(), version.name)
    assert (version.kind, version.parent, row["method"]) == ("reward", "base", "reward_head")
    assert (workbench.home.root / "features" / "base" / "last-float32").is_dir()
    prompt = [{"role": "user", "content": "Hi?"}]
    assert len(RewardScorer(version.path).score([prompt, prompt], ["Yes.", "No."])) == 2


@pytest.mark.integration
def test_real_model_head_learns_a_length_preference_on_held_out_rankings(real_model_dir, tmp_path, one_thread):
    config, options = resolve("reward_head", {"eval_fraction": 0.5})
    started = time.monotonic()
    out = tmp_path / "model"
    metrics = train(common.TrainInputs(length_rankings(40, seed=0), real_model_dir, out, config, options))
    elapsed = time.monotonic() - started

    assert metrics["eval/pairs"] >= 60
    assert metrics["eval/accuracy"] >= 0.8, metrics
    prompt = [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "How do I get better at knitting?"}]
    short, long = RewardScorer(out).score([prompt, prompt], [SENTENCES[0], " ".join(SENTENCES[:5])])
    assert long > short
    print(f"trained and evaluated in {elapsed:.0f} s (fit {metrics['train/fitting_seconds']} s): {metrics}")
