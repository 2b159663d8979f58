"""A real job on the tiny model takes its schedule from its data: the worker logs the
decision in one line, trains that many steps, and the version's card keeps it."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.jobs import JobRequest, JobRunner, Jobs

QUIRKS = Path(__file__).parent / "data" / "hh-rlhf-quirks.jsonl"


def test_a_dpo_job_logs_and_keeps_the_schedule_its_data_sets(workbench):
    assert workbench.import_pairs(QUIRKS) == 7   # one of them with an empty chosen answer
    jobs = Jobs(workbench.home, workbench.store)
    # the learning rate is chosen here, the epochs are left to the schedule
    settings = {"per_device_train_batch_size": 8, "max_length": 128, "learning_rate": 1e-3, "eval_fraction": 0}
    job_id = jobs.submit(JobRequest("dpo", settings=settings))
    job = JobRunner(jobs).run(job_id)
    log = jobs.log_text(job_id)
    assert job["status"] == "succeeded", log

    assert ("Schedule: 7 pairs: 8 epochs, 8 steps, lr 1e-3 (1 step an epoch at 8 pairs a step;"
            " 40 steps would take 40 epochs, 8 at most; learning_rate as set)") in log
    assert job["step"] == job["total_steps"] == 8
    card = json.loads((workbench.home.root / workbench.model_version(f"dpo-{job_id}")["path"] / "card.json").read_text())
    assert card["metrics"]["schedule/epochs"] == 8 and card["metrics"]["schedule/steps"] == 8
    assert card["metrics"]["schedule/learning_rate"] == 1e-3
    assert card["metrics"]["train/examples"] == 7   # the empty answer trains like any other
