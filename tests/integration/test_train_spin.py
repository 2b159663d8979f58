"""SPIN (self-play fine-tuning) on the tiny model: two iterations, each saved (the earlier
one inside the job's model), the held-out log-likelihood of the human answers logged per
iteration and rising, the DPO margin of the human answer over the policy's own positive;
the service registers one version per iteration, each the parent of the next; no human
answers, or an adapter SPIN cannot train, is one sentence and nothing is made."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.training_data import DataError
from rlhf.modeling import loading
from rlhf.train import spin
from rlhf.train.common import Reporter, TrainInputs
from rlhf.train.methods import SettingsError, resolve
from storage import models
from test_jobs import add_ranked, job_count
from test_train_policy import parquet_round_trip, said, user_turn

pytestmark = pytest.mark.usefixtures("one_thread")

# two iterations of a few steps at a rate the tiny random model moves at; 4-token answers
TINY_SPIN = {"iterations": 2, "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
             "max_length": 64, "spin_max_new_tokens": 4, "eval_fraction": 0.25, "guard_prompts": 2,
             "guard_max_new_tokens": 4}


def human_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"prompt": user_turn(f"Question {i}?"), "completion": said(f"Answer number {i}."),
                          "comparison_id": i} for i in range(n)])


@pytest.fixture(scope="module")
def spun(tmp_path_factory, tiny_model_dir) -> tuple[Path, dict, Reporter]:
    scratch = tmp_path_factory.mktemp("spin")
    config, options = resolve("spin", TINY_SPIN)
    reporter = Reporter()
    inputs = TrainInputs(parquet_round_trip(human_rows(16), scratch), tiny_model_dir, scratch / "model", config,
                         options, reporter=reporter)
    return scratch / "model", spin.train(inputs), reporter


def test_each_iteration_is_saved_on_the_jobs_base(spun, tiny_model_dir):
    out, metrics, _ = spun
    [first] = spin.iteration_dirs(out)
    for folder in (first, out):
        config = json.loads((folder / loading.ADAPTER_CONFIG).read_text())
        assert config["peft_type"] == "LORA"
        assert Path(config["base_model_name_or_path"]) == Path(tiny_model_dir).resolve()
        loading.load_causal_lm(folder)  # loads as a version would
    assert spin.iteration_metrics(first)["spin/iteration"] == 1.0
    assert metrics["spin/iterations"] == 2 and metrics["spin/iteration"] == 2
    assert metrics["train/examples"] == 12 and metrics["eval/examples"] == 4
    assert not (out.parent / "trainer").exists()
    assert "guard/heldout_accuracy" in metrics and "guard/kl" in metrics


def test_the_loss_prefers_the_human_answer_and_its_likelihood_rises(spun):
    _, metrics, reporter = spun
    logged = [(row["step"], row["spin/heldout_logp"]) for row in reporter.history if "spin/heldout_logp" in row]
    assert [step for step, _ in logged] == [0, 4, 8]  # the base, then each iteration's end
    losses = [row["step"] for row in reporter.history if "loss" in row]
    assert losses == list(range(1, 9)) and reporter.step == 8  # iteration 2's steps follow iteration 1's
    logp = [metrics[f"spin/heldout_logp/{t}"] for t in range(3)]
    assert [value for _, value in logged] == logp
    assert logp[0] < logp[1] < logp[2], logp
    assert metrics["train/rewards/margins"] > 0  # human answer over the policy's own, against the last iteration


def test_the_service_registers_each_iteration_as_the_parent_of_the_next(workbench):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("spin", settings={"iterations": 3}))
    job_dir = jobs.job_dir(job_id)
    for folder, t in ((job_dir / "model" / "iterations" / "1", 1), (job_dir / "model" / "iterations" / "2", 2),
                      (job_dir / "model", 3)):  # what the worker leaves (weights aside)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / loading.ADAPTER_CONFIG).write_text("{}")
        if t < 3:
            (folder / spin.ITERATION_FILE).write_text(json.dumps({"spin/iteration": t}))
    job = jobs.finish(job_id, {"state": "succeeded", "metrics": {"spin/iteration": 3}}, 0)
    assert job["status"] == "succeeded" and job["output_version"] == f"spin-{job_id}"
    cur = workbench.store.cursor()
    chain = {name: models.get(cur, name) for name in (f"spin-{job_id}-it1", f"spin-{job_id}-it2", f"spin-{job_id}")}
    assert [row["parent"] for row in chain.values()] == ["base", f"spin-{job_id}-it1", f"spin-{job_id}-it2"]
    assert [json.loads(row["metrics"])["spin/iteration"] for row in chain.values()] == [1, 2, 3]
    assert all(row["job_id"] == job_id and row["method"] == "spin" for row in chain.values())
    final = workbench.model_version(f"spin-{job_id}").path
    assert workbench.model_version(f"spin-{job_id}-it1").path == final / "iterations" / "1"
    assert json.loads((final / "iterations" / "2" / "card.json").read_text())["parent"] == f"spin-{job_id}-it1"
    listed = models.list_versions(cur).set_index("name")["parent"]
    assert listed[f"spin-{job_id}"] == f"spin-{job_id}-it2"


def test_no_human_answers_is_one_sentence_and_makes_nothing(workbench, tiny_model_dir, tmp_path):
    add_ranked(workbench, [[("ana", "A = B = C")], [("bo", "A = B = C")]])  # full ties: no top answer
    jobs = Jobs(workbench.home, workbench.store)
    with pytest.raises(DataError, match=r"^spin needs human answers and there are none: .*\.$"):
        jobs.submit(JobRequest("spin"))
    with pytest.raises(SettingsError, match="spin trains with adapter lora, full or last_layers, not prompt"):
        jobs.submit(JobRequest("spin", settings={"adapter": "prompt"}))
    assert job_count(workbench) == 0 and list(workbench.home.jobs_dir.iterdir()) == []
    config, options = resolve("spin", TINY_SPIN)
    blank = pd.DataFrame([{"prompt": user_turn("Hi?"), "completion": said("  "), "comparison_id": 0}])
    with pytest.raises(Exception, match="SPIN needs prompts with a human answer"):
        spin.train(TrainInputs(blank, tiny_model_dir, tmp_path / "model", config, options))
    assert not (tmp_path / "model").exists()


def test_the_train_tab_and_the_cli_offer_spin_with_its_settings():
    from app import job_views
    from rlhf.train.methods import METHODS

    assert "spin" in METHODS  # the Train tab's method list and `rlhf train`'s choices are METHODS
    shown = {setting.key: setting for setting in job_views.method_settings("spin")}
    assert shown["iterations"].default == 2 and shown["iterations"].help
    assert shown["sft_source"].choices == ("both", "better_answers", "top_ranked")
    assert shown["learning_rate"].from_data and shown["num_train_epochs"].from_data  # per iteration, from its pairs
