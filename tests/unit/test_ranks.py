"""Jobs under a launcher, without starting one: what each rank may run (`rlhf.train.ranks`),
the rank-0-only rule (status, metrics, the model folders), a rank's refusal in the worker,
and how the job ends when a rank other than 0 fails. The real two-rank runs are in
tests/integration/test_launcher.py."""

from __future__ import annotations

import json
import signal

import pytest

from rlhf.jobs import files, runner, worker
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.train import common, ranks
from storage import jobs as job_rows
from helpers import add_comparisons

LAUNCHED = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


def test_rank_and_world_size_come_from_the_launchers_variables():
    assert (ranks.rank({}), ranks.world_size({}), ranks.is_main({})) == (0, 1, True)
    assert (ranks.rank(LAUNCHED), ranks.world_size(LAUNCHED), ranks.is_main(LAUNCHED)) == (1, 2, False)
    assert ranks.is_main({"RANK": "0", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("method, env, words", [
    ("ppo", {}, None),                                    # one process: everything runs
    ("reward_head", {"WORLD_SIZE": "1"}, None),
    ("ppo", LAUNCHED, "PPO is the workbench's own single-process loop"),
    ("reward_head", LAUNCHED, "reward_head fits a head in one process"),
    ("dpo", LAUNCHED, None),
    ("reward", {**LAUNCHED, "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ("dpo", {**LAUNCHED, "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     "DeepSpeed ZeRO-3 shards the weights"),
    ("sft", {**LAUNCHED, "ACCELERATE_USE_FSDP": "true"}, "FSDP shards the weights"),
    ("sft", {"ACCELERATE_USE_FSDP": "true"}, "FSDP shards the weights"),  # even on one process
])
def test_what_a_launch_refuses_is_one_sentence(method, env, words):
    why = ranks.refusal(method, env)
    if words is None:
        assert why is None
    else:
        assert why.startswith(words) and why.endswith(".") and why.count(". ") == 0


def test_rows_per_step_count_every_rank(monkeypatch):
    assert common.examples_per_step({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}) == 6
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert common.examples_per_step({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}) == 12


def test_only_rank_0_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    reporter = common.Reporter(tmp_path)
    reporter.progress(1, 2)
    reporter.metrics(1, {"loss": 0.5})
    assert not reporter.is_main and list(tmp_path.iterdir()) == [] and reporter.history == [{"step": 1, "loss": 0.5}]
    monkeypatch.setenv("RANK", "0")
    reporter = common.Reporter(tmp_path)
    reporter.progress(1, 2)
    reporter.metrics(1, {"loss": 0.5})
    assert {p.name for p in tmp_path.iterdir()} == {"status.json", "metrics.jsonl"}


def test_outside_a_process_group_a_stop_and_a_gradient_are_this_ranks_own():
    import torch

    assert ranks.any_rank(True) and not ranks.any_rank(False)
    rho = torch.nn.Parameter(torch.tensor(0.0))
    ranks.average_gradient(rho)  # on two gloo ranks: tried by hand, gradients 1 and 2 gave 1.5 on both
    (3 * rho).backward()
    assert float(rho.grad) == 3.0


@pytest.fixture
def launched_worker(tmp_path, monkeypatch):
    """A job directory for a PPO job, run by `worker.run` as a rank of a 2-rank launch (in
    this process: nothing is started); the SIGTERM handler it installs is put back."""
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    (tmp_path / "spec.json").write_text(json.dumps({"method": "ppo", "config": {}, "options": {}}))
    (tmp_path / "model.partial").mkdir()  # rank 0's, half written: no other rank touches it

    def run(rank: int) -> int:
        monkeypatch.setenv("RANK", str(rank))
        return worker.run(tmp_path)

    yield run
    signal.signal(signal.SIGTERM, previous)


def test_a_rank_refuses_ppo_before_loading_anything(tmp_path, launched_worker):
    assert launched_worker(1) == 1
    assert not (tmp_path / "status.json").exists() and (tmp_path / "model.partial").is_dir()
    assert files.rank_failure(tmp_path)[1].startswith("Rank 1 of 2 failed: PPO is the workbench's own")
    assert files.rank_pids(tmp_path) and files.signal_ranks(tmp_path, 0) == 0  # this PID is no job's worker
    assert launched_worker(0) == 1
    status = files.read_status(tmp_path)
    assert status["state"] == "failed" and status["error"].startswith("PPO is the workbench's own")
    assert not (tmp_path / "model.partial").exists()  # rank 0 clears its own folder


@pytest.fixture
def running_job(workbench):
    """A DPO job marked running, as the runner leaves it while its ranks train."""
    for comparison_id in add_comparisons(workbench, 2, k=3):
        workbench.rank(comparison_id, "A > B > C", "ana")
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("dpo", settings={"max_steps": 1}))
    with workbench.store.transaction() as cur:
        job_rows.mark_running(cur, job_id)
    return jobs, job_id


def test_a_failing_rank_fails_the_job_with_its_reason(running_job):
    jobs, job_id = running_job
    job_dir = jobs.job_dir(job_id)
    files.write_rank_failure(job_dir, 1, 2, "Out of memory: lower per_device_train_batch_size.", at=100.0)
    # rank 0 was stopped by the launcher when rank 1 ended: its status says cancelled, but no one asked
    job = jobs.finish(job_id, {"state": "cancelled", "step": 3}, 1)
    assert job["status"] == "failed"
    assert job["error"] == "Rank 1 of 2 failed: Out of memory: lower per_device_train_batch_size."


def test_the_first_failure_is_the_cause(running_job):
    jobs, job_id = running_job
    job_dir = jobs.job_dir(job_id)
    files.write_rank_failure(job_dir, 1, 2, "RuntimeError: Connection closed by peer", at=101.0)
    job = jobs.finish(job_id, {"state": "failed", "error": "The disk is full.", "failed_at": 100.0}, 1)
    assert (job["status"], job["error"]) == ("failed", "The disk is full.")


def test_a_model_is_not_registered_when_a_rank_failed(running_job, workbench):
    jobs, job_id = running_job
    job_dir = jobs.job_dir(job_id)
    (job_dir / "model").mkdir()
    files.write_rank_failure(job_dir, 1, 2, "ValueError: bad", at=100.0)
    job = jobs.finish(job_id, {"state": "succeeded", "step": 1, "metrics": {}}, 1)
    assert (job["status"], job["output_version"]) == ("failed", None) and len(workbench.models()) == 1


def test_a_cancel_stays_a_cancel_whatever_the_ranks_say(running_job):
    jobs, job_id = running_job
    job_dir = jobs.job_dir(job_id)
    files.ask_to_stop(job_dir, "Cancelled")
    files.write_rank_failure(job_dir, 1, 2, "RuntimeError: Connection closed by peer", at=100.0)
    job = jobs.finish(job_id, {"state": "cancelled", "step": 4}, 2)
    assert (job["status"], job["error"]) == ("cancelled", "Cancelled at step 4.")


def test_a_rank_killed_without_a_word_fails_the_job(running_job):
    jobs, job_id = running_job
    # rank 1 was killed; the launcher stopped rank 0, which wrote "cancelled", but no one asked
    job = jobs.finish(job_id, {"state": "cancelled", "step": 3, "world_size": 2}, 1)
    assert job["status"] == "failed"
    assert job["error"] == ("A rank of the 2 ended before the job did, and the launcher stopped the others at step 3;"
                            " see the job's log.")


def test_a_lost_connection_to_another_rank_is_said_so():
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer"
                        " [127.0.0.1]:17296. This is typically caused by a remote worker crashing.")
    assert ranks.lost_peer_reason(gloo, 0, 2, 5) == (
        "Rank 0 of 2 lost its connection to another rank at step 5: that rank ended (killed, or crashed before it"
        " could say why); see the job's log.")
    assert ranks.lost_peer_reason(gloo, 0, 1, 5) is None  # one process: no other rank
    assert ranks.lost_peer_reason(ValueError("bad value"), 0, 2, 5) is None


def test_a_rank_that_says_who_it_is_is_not_named_twice(tmp_path):
    lost = ranks.lost_peer_reason(RuntimeError("Connection closed by peer"), 1, 2, 4)
    files.write_rank_failure(tmp_path, 1, 2, lost, at=1.0)
    assert files.rank_failure(tmp_path) == (1.0, lost)


def test_a_one_process_method_is_started_without_the_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LAUNCHER", "accelerate launch --multi_gpu --num_processes 2")
    assert runner.worker_command(tmp_path, "dpo")[:2] == ["accelerate", "launch"]
    for method in ("ppo", "reward_head"):
        assert runner.worker_command(tmp_path, method)[1:3] == ["-m", "rlhf.jobs.worker"]
