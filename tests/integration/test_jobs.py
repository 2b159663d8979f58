"""Training jobs end to end on the tiny model: settings checked before a job exists, the
snapshot of exactly the selected rows, the worker subprocess, progress and metrics in
the store, the registered version with its card, and every way a job can end badly
(refused, crashed, killed, cancelled) leaving nothing half-made."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from app.cli import main
from rlhf.jobs import files, requests, runner
from rlhf.jobs.service import JobError, JobRequest, Jobs
from rlhf.jobs.runner import JobRunner
from rlhf.train.methods import METHODS, SettingsError, parse_assignments, resolve
from rlhf.jobs.training_data import DataError, Selection, build
from rlhf.collect.workbench import Workbench
from rlhf.versions import VersionError
from storage import comparisons
from storage import jobs as job_rows
from storage import models
from storage.comparisons import NewCompletion

RLHF = Path(sys.executable).parent / "rlhf"
TINY_SFT = {"max_steps": 2, "per_device_train_batch_size": 2, "guard_prompts": 2, "guard_max_new_tokens": 4}

RANKINGS = [  # (annotator, ranking) per comparison of K=3
    [("ana", "A > B > C"), ("bo", "A > B = C")],
    [("ana", "C > A = B")],
    [("ana", "B > A > C"), ("bo", "C > A > B")],   # they disagree: pairwise agreement 1/3
    [("bo", "A = B = C")],                          # a full tie: no pair
    [("ana", "A > C > B")],
    [("bo", "B > C > A")],
]


def add_ranked(wb: Workbench, rankings=RANKINGS, prompt_set: str | None = None) -> list[int]:
    """Comparisons of three short completions for the first prompts, ranked as given."""
    with wb.store.transaction() as cur:
        sql = "SELECT id FROM prompts" + (" WHERE prompt_set = ?" if prompt_set else "") + " ORDER BY id LIMIT ?"
        prompt_ids = [r[0] for r in cur.execute(sql, [prompt_set, len(rankings)] if prompt_set else [len(rankings)]).fetchall()]
        ids = [comparisons.add(cur, pid, [NewCompletion(f"Answer {c} to prompt {pid}.", "base") for c in "ABC"])
               for pid in prompt_ids]
    for comparison_id, rankers in zip(ids, rankings):
        for user, ranking in rankers:
            wb.rank(comparison_id, ranking, user)
    return ids


def job_count(wb: Workbench) -> int:
    return wb.store.cursor().execute("SELECT count(*) FROM jobs").fetchall()[0][0]


# -- settings ------------------------------------------------------------------------------


def test_settings_use_trl_names_and_are_checked():
    config, options = resolve("dpo", parse_assignments(["learning_rate=1e-5", "beta=0.2", "pairs=all", "max_steps=3"]))
    assert config["learning_rate"] == 1e-5 and config["beta"] == 0.2 and config["max_steps"] == 3
    assert options["pairs"] == "all" and options["adapter"] == "lora"
    assert resolve("reward", {})[1]["loss"] == "bradley_terry"
    for bad, words in [({"lr": 1}, "no setting 'lr'"), ({"beta": "abc"}, "beta must be float"),
                       ({"learning_rate": -1}, "greater than 0"), ({"pairs": "some"}, "pairs must be one of"),
                       ({"max_steps": 1.5}, "max_steps must be int"), ({"adapter": "qlora"}, "CUDA GPU"),
                       ({"lr_scheduler_type": "nope"}, "Invalid dpo setting"), ({"eval_fraction": 0.9}, "between 0")]:
        with pytest.raises(SettingsError, match=words):
            resolve("dpo", bad)
    with pytest.raises(SettingsError, match="key=value"):
        parse_assignments(["learning_rate"])
    assert set(METHODS) == {"reward", "sft", "dpo", "kto", "ppo", "grpo", "rloo", "reward_head", "spin", "pretrain"}


@pytest.mark.parametrize("key, value, words", [
    ("output_dir", "/tmp/elsewhere", "may not set output_dir: the job writes only in its own directory"),
    ("logging_dir", "/tmp/elsewhere", "may not set logging_dir: the job writes only in its own directory"),
    ("push_to_hub", True, "may not set push_to_hub: a job never uploads"),
    ("hub_model_id", "me/model", "may not set hub_model_id: a job never uploads"),
    ("hub_token", "hf_x", "may not set hub_token: a job never uploads"),
    ("report_to", "wandb", "may not set report_to: .*always none"),
    ("trust_remote_code", True, "may not set trust_remote_code: a job never runs code"),
    ("resume_from_checkpoint", "/tmp/ckpt", "may not set resume_from_checkpoint: it reads a checkpoint"),
    ("save_steps", 1, "may not set save_steps"),
    ("deepspeed", "/tmp/ds.json", "may not set deepspeed"),
    ("chat_template_path", "/etc/passwd", "may not set chat_template_path"),
    ("log_completions_hub_repo", "me/logs", "may not set log_completions_hub_repo"),
    ("vllm_server_base_url", "http://example.org", "may not set vllm_server_base_url: .*connects to no server"),
    ("debug", "underflow_overflow", "may not set debug: the workbench sets it"),
    ("dataloader_num_workers", 16, "dataloader_num_workers must be between 0 and 2"),
])
def test_a_job_may_set_only_training_fields(key, value, words):
    method_name = "grpo" if key.startswith(("vllm", "log_completions")) else "dpo"
    with pytest.raises(SettingsError, match=words):
        resolve(method_name, {key: value})
    assert resolve("dpo", {"dataloader_num_workers": 2})[0]["dataloader_num_workers"] == 2


def test_every_default_and_documented_setting_is_allowed():
    from rlhf.train.methods import ALLOWED_FIELDS

    for spec in METHODS.values():
        assert set(spec.defaults) <= ALLOWED_FIELDS, spec.name
    resolve("ppo", {"kl_coef": 0.1, "mini_batch_size": 2, "batch_size": 4})
    resolve("grpo", {"num_generations": 2, "temperature": 1.0, "top_p": 0.9})
    resolve("kto", {"desirable_weight": 1.5, "warmup_steps": 2, "weight_decay": 0.01})


def test_the_workbenchs_trainer_arguments_win_over_settings(tmp_path):
    from rlhf.train.common import trainer_args

    out = tmp_path / "jobs" / "7" / "model.partial"
    args = trainer_args(out, {"learning_rate": 1e-3, "report_to": "wandb", "output_dir": "/tmp/elsewhere",
                              "save_strategy": "steps", "activation_checkpointing": True})
    assert args["report_to"] == "none" and args["save_strategy"] == "no"
    assert args["output_dir"] == str(tmp_path / "jobs" / "7" / "trainer")
    assert args["learning_rate"] == 1e-3 and args["activation_checkpointing"] is True and args["seed"] == 0


# -- the snapshot -----------------------------------------------------------------------------


def test_each_method_gets_its_own_rows(workbench):
    add_ranked(workbench)
    cur = workbench.store.cursor()
    everything = Selection()
    rankings = build(cur, METHODS["reward"], resolve("reward", {})[1], everything)
    assert len(rankings) == 8 and set(rankings.columns) >= {"prompt", "completions", "ranking", "comparison_id"}
    assert rankings["prompt"][0][0]["role"] == "user"

    best_worst = build(cur, METHODS["dpo"], {"pairs": "best_vs_worst"}, everything)
    every_pair = build(cur, METHODS["dpo"], {"pairs": "all"}, everything)
    assert len(every_pair) > len(best_worst) > 0
    assert best_worst["chosen"][0][0]["role"] == "assistant"

    unpaired = build(cur, METHODS["kto"], {"use_marks": True}, everything)
    assert unpaired["label"].any() and not unpaired["label"].all()

    prompts = build(cur, METHODS["ppo"], {}, everything)
    assert len(prompts) == 183 and list(prompts.columns) == ["prompt", "prompt_id", "category"]


def test_selection_narrows_the_rankings(workbench):
    ids = add_ranked(workbench)
    cur = workbench.store.cursor()
    spec, options = METHODS["reward"], resolve("reward", {})[1]
    assert set(build(cur, spec, options, Selection(annotators=["bo"]))["user"]) == {"bo"}
    agreeing = build(cur, spec, options, Selection(min_agreement=0.5))
    assert ids[2] not in set(agreeing["comparison_id"]) and ids[0] in set(agreeing["comparison_id"])
    assert build(cur, spec, options, Selection(since="2000-01-01", until="2999-01-01")).shape[0] == 8
    assert build(cur, spec, options, Selection(rounds=[1])).shape[0] == 8  # every comparison so far is round 1
    for empty in (Selection(until="2000-01-01"), Selection(rounds=[2])):
        with pytest.raises(DataError, match="no rankings to train reward on for this selection"):
            build(cur, spec, options, empty)
    with pytest.raises(DataError, match="Rounds are numbers from 1"):
        Selection.from_dict({"rounds": [0]})
    with pytest.raises(DataError, match="date like"):
        Selection.from_dict({"since": "yesterday"})
    with pytest.raises(DataError, match="Unknown data selection"):
        Selection.from_dict({"annotator": ["ana"]})


def test_sft_imitates_better_answers_and_top_completions(workbench):
    [first, second] = add_ranked(workbench, [[("ana", "B > A > C")], [("ana", "A > B > C")]])
    cur = workbench.store.cursor()
    ranking_id = cur.execute("SELECT id FROM rankings WHERE comparison_id = ?", [first]).fetchall()[0][0]
    cur.execute("UPDATE rankings SET better_answer = 'A much better answer.' WHERE id = ?", [ranking_id])
    cur.execute("UPDATE rankings SET none_acceptable = true WHERE comparison_id = ?", [second])
    rows = build(cur, METHODS["sft"], {"sft_source": "both"}, Selection())
    texts = [c[0]["content"] for c in rows["completion"]]
    assert len(texts) == 2 and "A much better answer." in texts
    assert any(t.startswith("Answer B to prompt") for t in texts)  # the top of the first ranking
    assert all(not t.startswith("Answer A") for t in texts)  # the top of a 'none acceptable' ranking is no model
    only_written = build(cur, METHODS["sft"], {"sft_source": "better_answers"}, Selection())
    assert [c[0]["content"] for c in only_written["completion"]] == ["A much better answer."]


# -- refusals leave nothing behind -------------------------------------------------------------


@pytest.mark.parametrize("request_, words", [
    (JobRequest("dpo"), "no rankings to train dpo on"),
    (JobRequest("ppo"), "needs a reward model"),
    (JobRequest("dpo", base="nope"), "no model version 'nope'"),
    (JobRequest("dpo", settings={"learning_rate": 0}), "greater than 0"),
    (JobRequest("sft", reward="base"), "'base' is a policy version; the reward version must be a reward model"),
])
def test_refused_jobs_change_nothing(workbench, request_, words):
    jobs = Jobs(workbench.home, workbench.store)
    with pytest.raises((JobError, SettingsError, DataError, VersionError), match=words):
        jobs.submit(request_)
    assert job_count(workbench) == 0
    assert list(workbench.home.jobs_dir.iterdir()) == []


def test_full_ties_give_no_pairs(workbench):
    add_ranked(workbench, [[("ana", "A = B = C")], [("bo", "A = B = C")]])
    jobs = Jobs(workbench.home, workbench.store)
    with pytest.raises(DataError, match="full tie"):
        jobs.submit(JobRequest("reward"))
    with pytest.raises(DataError, match="no preference pair"):
        jobs.submit(JobRequest("dpo"))
    assert Jobs(workbench.home, workbench.store).preview(JobRequest("reward", settings={"loss": "davidson"}))["rows"] == 2
    assert job_count(workbench) == 0


# -- running ----------------------------------------------------------------------------------


def test_a_job_trains_registers_a_version_and_keeps_its_record(workbench):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("sft", settings=TINY_SFT, created_by="ana"))
    job_dir = workbench.home.jobs_dir / str(job_id)
    spec = json.loads((job_dir / "spec.json").read_text())
    assert len(pd.read_parquet(job_dir / "data.parquet")) == spec["rows"] > 0
    assert jobs.get(job_id)["status"] == "queued"

    seen: list[dict] = []
    job = JobRunner(jobs).run(job_id, seen.append)
    assert job["status"] == "succeeded", jobs.log_text(job_id)
    assert job["output_version"] == f"sft-{job_id}" and job["step"] == job["total_steps"] == 2
    assert any(status.get("state") == "running" for status in seen)

    version = workbench.model_version(f"sft-{job_id}")
    row = models.get(workbench.store.cursor(), version.name)
    assert (version.kind, version.parent, row["method"], row["job_id"]) == ("policy", "base", "sft", job_id)
    assert version.data_snapshot == f"jobs/{job_id}/data.parquet"
    model_dir = version.path
    card = json.loads((model_dir / "card.json").read_text())
    assert card["parent"] == "base" and card["weights"] == "adapter" and card["rows"] == spec["rows"]
    assert (model_dir / "adapter_config.json").is_file() and not (job_dir / "model").exists()
    metrics = jobs.metrics(job_id)
    assert "loss" in set(metrics["name"]) and set(metrics["step"]) >= {1, 2}
    assert "Succeeded" in jobs.log_text(job_id)

    workbench.promote(f"sft-{job_id}")  # the new version samples the next comparisons
    assert workbench.generate(n=1, k=2) and workbench.model_version(None).name == f"sft-{job_id}"


def _run_in_thread(jobs: Jobs, job_id: int) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(JobRunner(jobs, poll_seconds=0.2).run(job_id)))
    thread.start()
    return thread, result


def _wait_for_step(jobs: Jobs, job_id: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if files.read_status(jobs.job_dir(job_id)).get("step", 0) >= 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} made no step:\n{jobs.log_text(job_id)}")


def test_cancel_stops_a_running_job_within_seconds(workbench):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("sft", settings={"max_steps": 100000, "per_device_train_batch_size": 1}))
    thread, result = _run_in_thread(jobs, job_id)
    _wait_for_step(jobs, job_id)
    asked = time.monotonic()
    assert "stopping" in jobs.cancel(job_id)
    thread.join(60)
    assert time.monotonic() - asked < 15
    assert result["status"] == "cancelled" and result["output_version"] is None
    assert len(workbench.models()) == 1 and not (jobs.job_dir(job_id) / "model").exists()
    with pytest.raises(JobError, match="already ended"):
        jobs.cancel(job_id)


def test_a_killed_worker_leaves_a_failed_job_and_no_version(workbench):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("sft", settings={"max_steps": 100000, "per_device_train_batch_size": 1}))
    thread, result = _run_in_thread(jobs, job_id)
    _wait_for_step(jobs, job_id)
    assert files.signal_worker(jobs.job_dir(job_id), signal.SIGKILL)
    thread.join(60)
    assert result["status"] == "failed" and "killed by signal SIGKILL" in result["error"]
    assert len(workbench.models()) == 1
    assert jobs.log_text(job_id)  # the log stays for the post-mortem


def test_a_queued_job_is_cancelled_at_once_and_a_training_failure_is_one_sentence(workbench):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    queued = jobs.submit(JobRequest("sft", settings=TINY_SFT))
    assert "cancelled" in jobs.cancel(queued)
    assert jobs.get(queued)["status"] == "cancelled"

    broken = jobs.submit(JobRequest("sft", settings=TINY_SFT))
    spec_path = jobs.job_dir(broken) / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["base_path"] = str(workbench.home.root / "models" / "gone")  # the parent's weights were deleted
    spec_path.write_text(json.dumps(spec))
    job = JobRunner(jobs).run(broken)
    assert job["status"] == "failed" and "\n" not in job["error"] and "Traceback" not in job["error"]
    assert "Traceback" in jobs.log_text(broken)
    assert len(workbench.models()) == 1


# -- the command line -----------------------------------------------------------------------------


def test_rlhf_train_runs_in_the_foreground(tiny_home, capsys, tmp_path):
    with Workbench(tiny_home) as wb:
        add_ranked(wb)
    config = tmp_path / "sft.yaml"
    config.write_text("learning_rate: 1.0e-4\nselection:\n  annotators: [ana]\n")
    argv = ["train", "sft", "--config", str(config), "--set", "max_steps=2", "--set", "per_device_train_batch_size=2",
            "--home", str(tiny_home.root)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Job 1 succeeded: registered sft-1 (policy, parent base)" in out
    assert main(["jobs", "--json", "--home", str(tiny_home.root)]) == 0
    [job] = json.loads(capsys.readouterr().out)
    assert (job["id"], job["status"], job["output_version"], job["method"]) == (1, "succeeded", "sft-1", "sft")
    spec = json.loads((tiny_home.jobs_dir / "1" / "spec.json").read_text())
    assert spec["selection"]["annotators"] == ["ana"] and spec["config"]["learning_rate"] == 1e-4
    assert main(["jobs", "log", "1", "--tail", "1", "--home", str(tiny_home.root)]) == 0
    assert "Succeeded" in capsys.readouterr().out

    assert main(["train", "dpo", "--set", "lr=1", "--home", str(tiny_home.root)]) == 1
    assert "has no setting 'lr'" in capsys.readouterr().err


def test_rlhf_train_hands_the_job_to_the_server_holding_the_store(tiny_home):
    with Workbench(tiny_home) as wb:
        add_ranked(wb)
        tiny_home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9999"}))
        command = [str(RLHF), "train", "sft", "--set", "max_steps=2", "--home", str(tiny_home.root)]
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        jobs = Jobs(tiny_home, wb.store)
        deadline = time.monotonic() + 60
        while cli.poll() is None and time.monotonic() < deadline:
            requests.answer_requests(jobs)  # what the server's runner does every second
            time.sleep(0.2)
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 0, err
        assert "Queued as job 1 on the server at http://127.0.0.1:9999" in out
        assert jobs.get(1)["status"] == "queued" and jobs.get(1)["created_by"] == "cli"

        listing = subprocess.run([str(RLHF), "jobs", "--home", str(tiny_home.root)], capture_output=True, text=True)
        assert listing.returncode == 0 and "sft" in listing.stdout and "queued" in listing.stdout


def test_a_full_disk_is_one_sentence_and_leaves_no_job(workbench, monkeypatch):
    import errno

    from rlhf.jobs.worker import failure_reason

    add_ranked(workbench)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(JobError, match="Cannot write the job's snapshot .*No space left on device"):
        Jobs(workbench.home, workbench.store).submit(JobRequest("sft"))
    assert job_count(workbench) == 0 and list(workbench.home.jobs_dir.iterdir()) == []
    assert failure_reason(OSError(errno.ENOSPC, "No space left on device")).startswith("The disk is full")


# -- faults: stopping the worker's whole group, stale PIDs, a watcher or a start that fails ----------


def fake_launcher(tmp_path: Path, monkeypatch, ignore_term: bool) -> Path:
    """RLHF_LAUNCHER set to a shell script in place of the training process: it starts a
    child and waits (ignoring SIGTERM if asked, as a worker stuck in a long step would), so
    a test sees a stop reach the whole process group without loading a model. Returns the
    file the child's PID is written to."""
    script = tmp_path / "launcher.sh"
    child_pid = tmp_path / "child.pid"
    script.write_text(("trap '' TERM\n" if ignore_term else "") + f"sleep 120 &\necho $! > {child_pid}\nwait\n")
    monkeypatch.setenv("RLHF_LAUNCHER", f"sh {script}")
    return child_pid


def alive(pid: int) -> bool:
    """Running, not a zombie left for a parent (or a container's init) that never reaps."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_for(predicate, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_cancel_stops_the_workers_whole_group_and_kills_it_after_the_grace(workbench, tmp_path, monkeypatch):
    add_ranked(workbench)
    child_pid = fake_launcher(tmp_path, monkeypatch, ignore_term=True)
    monkeypatch.setattr(runner, "CANCEL_GRACE_SECONDS", 1)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("sft", settings=TINY_SFT))
    thread, result = _run_in_thread(jobs, job_id)
    wait_for(child_pid.exists, what="the launcher's start")
    child = int(child_pid.read_text())
    asked = time.monotonic()
    assert "stopping" in jobs.cancel(job_id)
    thread.join(30)
    assert time.monotonic() - asked < 10  # SIGTERM ignored, SIGKILL after the (shortened) grace
    assert result["status"] == "cancelled" and "killed" in result["error"], result
    wait_for(lambda: not alive(child), 5, "the end of the launcher's child")  # the group, not one process


def test_requests_are_answered_while_a_job_runs(workbench, tmp_path, monkeypatch):
    add_ranked(workbench)
    child_pid = fake_launcher(tmp_path, monkeypatch, ignore_term=False)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("sft", settings=TINY_SFT))
    runner = JobRunner(jobs, poll_seconds=0.2)
    runner.start()
    try:
        wait_for(child_pid.exists, what="the job's start")
        asked = time.monotonic()
        queued = requests.send_request(workbench.home, {"action": "submit", "method": "sft", "settings": TINY_SFT},
                                          wait_seconds=10)
        answer = requests.send_request(workbench.home, {"action": "cancel", "job_id": job_id}, wait_seconds=10)
        assert time.monotonic() - asked < 10 and "stopping" in answer["message"]
        assert jobs.get(queued["job_id"])["status"] == "queued"
        wait_for(lambda: jobs.get(job_id)["status"] == "cancelled", what="the cancel")
        assert jobs.get(job_id)["error"].startswith("Cancelled at step 0")
    finally:
        runner.stop(grace=1)


def test_a_stale_pid_is_never_signalled(workbench):
    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("sft", settings=TINY_SFT))
    with workbench.store.transaction() as cur:
        job_rows.mark_running(cur, job_id)  # left 'running' by a server that was killed
    stranger = subprocess.Popen(["sleep", "60"])  # the PID now belongs to another program
    try:
        job_dir = jobs.job_dir(job_id)
        (job_dir / "worker.pid").write_text(str(stranger.pid))
        (job_dir / "status.json").write_text(json.dumps({"state": "running", "step": 3, "pid": stranger.pid}))
        assert not files.signal_worker(job_dir, signal.SIGTERM)
        jobs.recover()
        assert stranger.poll() is None and alive(stranger.pid)
        job = jobs.get(job_id)
        assert job["status"] == "failed" and "stopped before the job ended" in job["error"]
    finally:
        stranger.kill()
        stranger.wait()


def test_a_worker_that_cannot_start_ends_the_job_as_failed(workbench, monkeypatch):
    add_ranked(workbench)
    monkeypatch.setenv("RLHF_LAUNCHER", "/nonexistent/launcher --flag")
    jobs = Jobs(workbench.home, workbench.store)
    job = JobRunner(jobs).run(jobs.submit(JobRequest("sft", settings=TINY_SFT)))
    assert job["status"] == "failed" and job["error"].startswith("The training process could not start")
    assert "/nonexistent/launcher" in job["error"]


def test_an_error_in_the_watch_loop_ends_the_job_as_failed_and_stops_the_worker(workbench, tmp_path, monkeypatch):
    add_ranked(workbench)
    child_pid = fake_launcher(tmp_path, monkeypatch, ignore_term=False)
    looks = []

    def failing_update(self):
        looks.append(1)
        if child_pid.exists():
            raise RuntimeError("the store went away")
        return {}

    monkeypatch.setattr(runner._Watcher, "update", failing_update)
    jobs = Jobs(workbench.home, workbench.store)
    job = JobRunner(jobs, poll_seconds=0.1).run(jobs.submit(JobRequest("sft", settings=TINY_SFT)))
    assert job["status"] == "failed" and "Watching the job failed (RuntimeError: the store went away)" in job["error"]
    wait_for(lambda: not alive(int(child_pid.read_text())), 5, "the end of the worker's child")


# -- a crash between moving a trained model into place and registering it ---------------------------

CRASH_AT = {  # the step the server never did, killed just before it
    "move": "move_into_place",      # intent written, the model still in the job's directory
    "card": "write_card",           # the model in models/, no card, not registered
    "commit": "models.register",     # moved with its card; the transaction never committed
    "clear": "clear_intent",        # registered; the intent left behind
}

CRASHING_SERVER = """
import os, sys
from rlhf.jobs import service
from rlhf.jobs.files import read_status
from rlhf.jobs.service import Jobs
from rlhf.home import Home
from rlhf.collect.workbench import Workbench
step, root, job_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = service.models if step.startswith("models.") else service
setattr(owner, step.rpartition(".")[2], lambda *args, **kwargs: os._exit(137))  # kill -9 here: no clean-up runs
with Workbench(Home.resolve(root)) as wb:
    jobs = Jobs(wb.home, wb.store)
    jobs.finish(job_id, read_status(jobs.job_dir(job_id)), 0)
"""


@pytest.mark.parametrize("crash", list(CRASH_AT))
def test_a_crash_while_registering_a_model_is_recovered_at_the_next_start(tiny_home, crash):
    with Workbench(tiny_home) as wb:
        add_ranked(wb)
        jobs = Jobs(wb.home, wb.store)
        job_id = jobs.submit(JobRequest("sft", settings=TINY_SFT))
        with wb.store.transaction() as cur:
            job_rows.mark_running(cur, job_id)
        job_dir = jobs.job_dir(job_id)
        (job_dir / "model").mkdir()  # what a worker that succeeded leaves
        (job_dir / "model" / "adapter_config.json").write_text("{}")
        (job_dir / "status.json").write_text(json.dumps({"state": "succeeded", "step": 2, "total": 2}))
    crashed = subprocess.run([sys.executable, "-c", CRASHING_SERVER, CRASH_AT[crash], str(tiny_home.root),
                              str(job_id)], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 137, crashed.stderr
    name, target = f"sft-{job_id}", tiny_home.model_dir(f"sft-{job_id}")

    with Workbench(tiny_home) as wb:  # the next start
        jobs = Jobs(wb.home, wb.store)
        jobs.recover()
        job = jobs.get(job_id)
        assert job["status"] == "succeeded" and job["output_version"] == name
        assert wb.model_version(name).path == target
        assert (target / "adapter_config.json").is_file() and (target / "card.json").is_file()
        assert not (job_dir / "model").exists() and not (job_dir / files.INTENT_FILE).exists()
        registered = {row[0] for row in wb.store.cursor().execute("SELECT path FROM model_versions").fetchall()}
        on_disk = {str(p.relative_to(wb.home.root)) for p in wb.home.models_dir.iterdir() if p.is_dir()}
        assert on_disk == registered  # no directory without a version, no version without weights


def test_a_policy_job_reports_its_guardrails_in_its_metrics_and_the_models_table(workbench, capsys):
    from argparse import Namespace

    from app import job_views
    from app.cli import cmd_models

    add_ranked(workbench)
    jobs = Jobs(workbench.home, workbench.store)
    job_id = jobs.submit(JobRequest("dpo", settings={"max_steps": 2, "per_device_train_batch_size": 2,
                                                     "eval_fraction": 0.5, "guard_prompts": 3,
                                                     "guard_max_new_tokens": 8}))
    job = JobRunner(jobs).run(job_id)
    assert job["status"] == "succeeded", jobs.log_text(job_id)
    final = models.get(workbench.store.cursor(), f"dpo-{job_id}")["metrics"]
    final = json.loads(final) if isinstance(final, str) else final
    assert 0 <= final["guard/heldout_accuracy"] <= 1 and final["guard/heldout_pairs"] >= 1
    assert math.isfinite(final["guard/kl"]) and 0 <= final["guard/repetition"] <= 1 and final["guard/prompts"] == 3
    assert "Guardrails:" in jobs.log_text(job_id)
    # the plot has the parent's figures at step 0 and the job's at its end
    plotted = job_views.guard_frame(jobs.metrics(job_id))
    assert set(plotted["name"]) == {"guard/heldout_accuracy", "guard/kl"} and sorted(set(plotted["step"]))[0] == 0
    row = job_views.models_table(workbench.models()).iloc[0]
    assert row["name"] == f"dpo-{job_id}" and row["held-out acc"] != "" and row["KL"] != "" and row["repetition"]
    assert row["guardrail"] == final.get("guard/verdict", "")
    cmd_models(workbench, Namespace(json=False))
    assert "held-out acc" in capsys.readouterr().out
    assert main(["jobs", "show", str(job_id), "--home", str(workbench.home.root)]) == 0
    assert "Guardrails: held-out accuracy" in capsys.readouterr().out
