"""Several objectives end to end: a reward model of one rated dimension trains, saves and
registers as a job on the tiny model; GRPO and PPO jobs train against a combination of
reward versions; and on the real model a reward model of a rated dimension learns it
(held-out rated pairs, an accuracy a no-op cannot reach)."""

from __future__ import annotations

import json
import math
import random
import time

import pandas as pd
import pytest

from rlhf.jobs.runner import JobRunner
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.modeling.scoring import RewardScorer
from rlhf.preference.pairs import rated_rankings
from rlhf.train import common, reward
from rlhf.train.methods import resolve
from tests.helpers import rated_comparisons, register, save_reward_model
from tests.integration.test_train_reward import PLAIN, PREFERRED, TOP_LAYERS, hidden_preference_rankings

TINY_REWARD = {"max_steps": 2, "per_device_train_batch_size": 4, "eval_fraction": 0.25}
TINY_GUARD = {"guard_prompts": 2, "guard_max_new_tokens": 4, "guard_pairs": 0}
TINY_ONLINE = {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 4,
               **TINY_GUARD}
TINY_PPO = {"batch_size": 4, "mini_batch_size": 2, "num_ppo_epochs": 1, "response_length": 4, "max_steps": 1,
            **TINY_GUARD}


def test_a_reward_model_of_one_dimension_trains_saves_and_registers(workbench):
    rated_comparisons(workbench, 8)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("reward", settings={**TINY_REWARD, "objective": "helpfulness",
                                                        "use_margin": True}))
    job = JobRunner(jobs).run(job_id, lambda status: None)
    assert job["status"] == "succeeded", jobs.log_text(job_id)
    version = workbench.model_version(job["output_version"])
    assert version.kind == "reward" and version.parent == "base"
    info = json.loads((version.path / "reward.json").read_text())
    assert info["objective"] == "helpfulness" and info["use_margin"] is True
    assert json.loads((version.path / "card.json").read_text())["options"]["objective"] == "helpfulness"
    assert workbench.models().set_index("name").loc[version.name, "objective"] == "helpfulness"
    metrics = info["metrics"]
    assert metrics["train/pairs"] == 6 * 3 and metrics["eval/pairs"] == 2 * 3   # 3 rated pairs per comparison
    assert math.isfinite(metrics["train_loss"])


def test_grpo_and_ppo_jobs_train_against_a_combination(workbench, tiny_model_dir):
    for name, seed in (("helpful", 3), ("safe", 4)):
        save_reward_model(workbench.home.model_dir(name), tiny_model_dir, seed=seed, visible_scores=True)
        register(workbench, name, "reward")
    workbench.add_reward_combination("gated", "gate:safety=safe,helpfulness=helpful,threshold=0")
    jobs = Jobs(workbench.home, workbench.store)
    selection = {"prompt_sets": ["default"]}
    for method, settings in (("grpo", TINY_ONLINE), ("ppo", TINY_PPO)):
        job_id = jobs.submit(JobRequest(method, reward="gated", settings=settings, selection=selection))
        spec = json.loads((workbench.home.jobs_dir / str(job_id) / "spec.json").read_text())
        assert spec["reward"] == "gated"
        data = pd.read_parquet(workbench.home.jobs_dir / str(job_id) / "data.parquet")
        assert "safety" in set(data["category"])   # the gate reads which prompts are flagged unsafe
        job = JobRunner(jobs).run(job_id, lambda status: None)
        assert job["status"] == "succeeded", jobs.log_text(job_id)
        card = json.loads((workbench.model_version(job["output_version"]).path / "card.json").read_text())
        assert card["reward"] == "gated"


# -- the real model ------------------------------------------------------------------------

def rated_hidden_preference(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rankings' own real-model data (tests/integration/test_train_reward.py), its order
    reversed so that the rankings put the plain completions first, and helpfulness ratings
    that (secretly) rate the completions ending "Hope this helps!" 4-5 and the others 1-2:
    a model of helpfulness must learn the ratings, not the rankings."""
    rng = random.Random(seed)
    rankings = hidden_preference_rankings(n, seed)
    rankings["ranking"] = [" > ".join(reversed(text.split(" > "))) for text in rankings["ranking"]]
    ratings = [(row["ranking_id"], "ABCD"[i], "helpfulness",
                rng.choice([4, 5]) if text.endswith(PREFERRED) else rng.choice([1, 2]))
               for row in rankings.to_dict("records") for i, text in enumerate(row["completions"])]
    return rankings, pd.DataFrame(ratings, columns=["ranking_id", "letter", "dimension", "score"])


@pytest.mark.integration
def test_real_model_learns_a_rated_dimension(real_model_dir, tmp_path, one_thread):
    # As the rankings' own real-model test: 30 training rankings, each one batch element,
    # LoRA on the top four of the 30 layers, one epoch.
    rankings, ratings = rated_hidden_preference(40, seed=0)
    rows = rated_rankings(rankings, ratings, "helpfulness")
    assert len(rows) == 40
    started = time.monotonic()
    out = tmp_path / "model"
    config, options = resolve("reward", {"objective": "helpfulness", "grouping": "ranking", "eval_fraction": 0.25,
                                         "learning_rate": 1e-3, "per_device_train_batch_size": 4, "max_steps": -1,
                                         "num_train_epochs": 1, "lora_target": TOP_LAYERS})
    metrics = reward.train(common.TrainInputs(rows, real_model_dir, out, config, options, reporter=common.Reporter()))
    elapsed = time.monotonic() - started
    # held-out rated pairs: an untrained head orders them by chance (about half), the rankings' order is the reverse
    assert metrics["eval/pairs"] >= 15
    assert metrics["eval/accuracy"] >= 0.75, metrics
    question = [{"role": "user", "content": "What are lanterns?"}]
    helpful, plain = RewardScorer(out).score([question] * 2,
                                             [f"Lanterns give light. {end}" for end in (PREFERRED, PLAIN)])
    assert helpful > plain
    assert json.loads((out / "reward.json").read_text())["objective"] == "helpfulness"
    print(f"trained and evaluated in {elapsed:.0f} s: {metrics}")
