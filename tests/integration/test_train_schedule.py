"""Jobs on the tiny model take their schedule from their data: the trainer trains the
epochs the rule derives and logs the decision in one line; through the worker, what the
user set wins, what the method only defaulted is replaced, and the card keeps it."""

from __future__ import annotations

import json
import logging

import pandas as pd

from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.runner import JobRunner
from rlhf.train import sft
from rlhf.train.common import TrainInputs
from rlhf.train.methods import resolve
from helpers import DATA

QUIRKS = DATA / "hh-rlhf-quirks.jsonl"


def test_a_small_set_trains_the_epochs_the_schedule_derives(tiny_model_dir, tmp_path, caplog, one_thread):
    frame = pd.DataFrame([{"prompt": [{"role": "user", "content": f"Question {i}?"}],
                           "completion": [{"role": "assistant", "content": f"Answer {i}."}]} for i in range(2)])
    given = {"per_device_train_batch_size": 2, "max_length": 128}
    config, options = resolve("sft", given)   # num_train_epochs=1 and the learning rate are only defaults
    with caplog.at_level(logging.INFO, logger="rlhf.train.common"):
        metrics = sft.train(TrainInputs(frame, tiny_model_dir, tmp_path / "model", config, options,
                                        given=frozenset(given)))
    assert ("Schedule: 2 demonstrations: 8 epochs, 8 steps, lr 2e-4 (1 step an epoch at 2 demonstrations a step;"
            " 40 steps would take 40 epochs, 8 at most; lr for SFT with LoRA)") in caplog.messages
    assert metrics["train/steps"] == metrics["schedule/steps"] == 8 and metrics["schedule/epochs"] == 8


def test_a_job_keeps_what_the_user_set_replaces_the_defaults_and_records_the_schedule(workbench):
    assert workbench.import_pairs(QUIRKS) == 7
    jobs = Jobs(workbench.home, workbench.store)
    settings = {"per_device_train_batch_size": 8, "max_length": 128, "num_train_epochs": 1, "eval_fraction": 0}
    job_id = jobs.submit(JobRequest("dpo", settings=settings))
    job = JobRunner(jobs).run(job_id)
    log = jobs.log_text(job_id)
    assert job["status"] == "succeeded", log

    # 7 pairs: the one whose chosen answer is empty is a preference too
    assert ("Schedule: 7 pairs: 1 epoch, 1 step, lr 2e-4 (1 step an epoch at 8 pairs a step;"
            " num_train_epochs as set; lr for DPO with LoRA)") in log
    assert job["step"] == job["total_steps"] == 1
    card = json.loads((workbench.model_version(f"dpo-{job_id}").path / "card.json").read_text())
    assert card["metrics"]["schedule/epochs"] == 1 and card["metrics"]["schedule/steps"] == 1
    assert card["metrics"]["schedule/learning_rate"] == 2e-4
