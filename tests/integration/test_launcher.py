"""Jobs under a launcher for real: `RLHF_LAUNCHER="accelerate launch --multi_gpu
--num_processes 2"` starts two worker ranks that join over gloo on this CPU machine. A
reward job on the tiny model: both ranks train, rank 0 alone writes, one version is
registered. A DPO job cancelled: every rank stops, at the same step. (The refusals, the
rank-0-only rule and a failing rank: tests/unit/test_ranks.py.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from rlhf.jobs import files
from rlhf.jobs.runner import JobRunner
from rlhf.jobs.service import JobRequest, Jobs
from conftest import free_port
from test_jobs import _run_in_thread, _wait_for_step, add_ranked, alive, wait_for

ACCELERATE = Path(sys.executable).with_name("accelerate")
TINY = {"max_steps": 2, "per_device_train_batch_size": 1, "eval_fraction": 0.0}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_ranks(request, monkeypatch):
    """The launcher of two worker ranks, written one of the two documented ways (the
    test's parameter): "flags", or the shipped DDP "config"; each launch on a port of its own."""
    how = (f"--config_file {ROOT / 'configs/accelerate/ddp.yaml'}" if request.param == "config"
           else "--multi_gpu --num_processes 2")
    monkeypatch.setenv("RLHF_LAUNCHER", f"{ACCELERATE} launch {how} --main_process_port {free_port()}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def ranks_that(log: str, words: str) -> set[str]:
    """The ranks whose log lines (`[rank N] ...`) say `words`."""
    return {line.split("[rank ", 1)[1].split("]")[0] for line in log.splitlines() if "[rank " in line and words in line}


@pytest.mark.parametrize("two_ranks", ["config"], indirect=True)
def test_two_ranks_train_a_reward_model_and_one_version_is_registered(workbench, two_ranks):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("reward", settings={**TINY, "max_length": 256}))
    job = JobRunner(jobs, poll_seconds=0.2).run(job_id)
    log = jobs.log_text(job_id)
    assert job["status"] == "succeeded", log
    assert ranks_that(log, "trained 2 steps over gloo") == {"0", "1"}, log  # both trained, in one process group
    assert list(workbench.models()["name"]) == ["base", f"reward-{job_id}"]  # one version, not one per rank
    job_dir = jobs.job_dir(job_id)
    assert not list(job_dir.glob("rank-*")) and not (job_dir / "model.partial").exists()
    metrics = jobs.metrics(job_id)
    assert sorted(metrics[metrics["name"] == "loss"]["step"]) == [1, 2]  # rank 0's lines only, once each


@pytest.mark.parametrize("two_ranks", ["flags"], indirect=True)
def test_a_cancelled_dpo_job_stops_every_rank_at_the_same_step(workbench, two_ranks):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("dpo", settings={**TINY, "max_steps": 100000, "max_length": 256}))
    thread, result = _run_in_thread(jobs, job_id)
    _wait_for_step(jobs, job_id)  # rank 0 steps only with rank 1: DDP averages their gradients each step
    job_dir = jobs.job_dir(job_id)
    pids = files.rank_pids(job_dir)
    assert len(pids) == 2 and all(files.is_worker_of(pid, job_dir) for pid in pids)
    asked = time.monotonic()
    assert "stopping" in jobs.cancel(job_id)
    thread.join(60)
    assert time.monotonic() - asked < 30
    assert result["status"] == "cancelled", result
    wait_for(lambda: not any(alive(pid) for pid in pids), 5, "the end of both ranks")
    log = jobs.log_text(job_id)
    step = result["error"].split("at step ")[1].rstrip(".")
    assert ranks_that(log, f"Cancelled at step {step} (rank") == {"0", "1"}, log
    assert len(workbench.models()) == 1 and not list(job_dir.glob("rank-*"))
