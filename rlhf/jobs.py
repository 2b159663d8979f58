"""Training jobs: checked and snapshotted here, trained by a worker subprocess
(`rlhf.worker`), watched and ingested here.

`Jobs` lives in the process that owns the store (the server, or the CLI when no server
runs). Submitting checks everything a job needs (method, settings, base and reward
versions, enough data) before anything is written, then writes `jobs/<id>/spec.json` and
`data.parquet` (exactly the rows the job trains on) and a queued job row. `JobRunner`
runs queued jobs one at a time: it starts the worker, copies its progress and metrics
into the store as they come, and on success moves `model/` to `models/<version>/`, writes
`card.json` and registers the version, in one transaction with the job's end. A worker
that crashes or is killed leaves a failed job with its log and no version.

A CLI started while the server holds the store hands requests over through files in
`jobs/requests/`; a thread of the server's runner answers them, while a job runs too.

A worker runs in its own session, so a stop reaches its whole process group (a launcher's
children too): SIGTERM (a clean stop at the next step), SIGKILL when it has not ended
CANCEL_GRACE_SECONDS later. A cancel is a `cancel` file in the job's directory that the
watching runner acts on. A PID read back from a file is signalled only while that process
is still this job's worker. Moving a trained model into `models/` and registering it is
preceded by a `registering.json` intent, so a crash in between is undone at the next start.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from rlhf import training_data
from rlhf.errors import UserError
from rlhf.home import Home
from rlhf.train.methods import method, resolve
from rlhf.training_data import Selection
from storage import jobs as job_rows
from storage import models
from storage.db import Store
from storage.scores import newest_reward

log = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 15
REQUEST_WAIT_SECONDS = 60
REQUEST_POLL_SECONDS = 0.5
CANCEL_FILE = "cancel"            # {"reason": ...}: the runner stops the worker
INTENT_FILE = "registering.json"  # {"name", "target"}: a model is being moved into place


class JobError(UserError):
    """A job request refused, or an operation on a job that cannot be done."""


@dataclass
class JobRequest:
    method: str
    base: str | None = None        # policy version; None: the active policy
    reward: str | None = None      # reward version for ppo/grpo/rloo; None: the newest
    settings: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    created_by: str | None = None


@dataclass
class Prepared:
    spec: dict
    rows: pd.DataFrame


def version_name(method_name: str, job_id: int) -> str:
    return f"{method_name}-{job_id}"


class Jobs:
    def __init__(self, home: Home, store: Store):
        self.home, self.store = home, store

    # -- submitting -------------------------------------------------------------------

    def prepare(self, request: JobRequest) -> Prepared:
        """Everything a job needs, checked; raises a UserError with one sentence."""
        spec = method(request.method)
        config, options = resolve(spec.name, request.settings)
        cur = self.store.cursor()
        base = self._version(cur, request.base, "policy")
        reward = self._version(cur, request.reward, "reward") if spec.needs_reward or request.reward else None
        selection = Selection.from_dict(request.selection)
        rows = training_data.build(cur, spec, options, selection)
        return Prepared(
            spec={
                "method": spec.name, "kind": spec.kind,
                "base": base["name"], "base_path": str(self.home.root / base["path"]),
                "base_model": base["base_model"],
                "reward": reward and reward["name"],
                "reward_path": reward and str(self.home.root / reward["path"]),
                "config": config, "options": options, "selection": selection.as_dict(),
                "settings": sorted(request.settings),  # what the user chose; the schedule fills in the rest
                "rows": len(rows), "created_by": request.created_by,
            },
            rows=rows,
        )

    def preview(self, request: JobRequest) -> dict:
        """How much the request would train on, without making a job."""
        prepared = self.prepare(request)
        rows = prepared.rows
        return {"rows": len(rows), "data": method(request.method).data,
                "comparisons": int(rows["comparison_id"].nunique()) if "comparison_id" in rows else None,
                "base": prepared.spec["base"], "reward": prepared.spec["reward"]}

    def submit(self, request: JobRequest) -> int:
        prepared = self.prepare(request)
        with self.store.transaction() as cur:
            job_id = job_rows.create(cur, prepared.spec["method"], prepared.spec, request.created_by)
            job_dir = self.home.jobs_dir / str(job_id)
            spec = {**prepared.spec, "job_id": job_id,
                    "output_version": version_name(prepared.spec["method"], job_id)}
            try:
                job_dir.mkdir(parents=True, exist_ok=False)
                prepared.rows.to_parquet(job_dir / "data.parquet", index=False)
                (job_dir / "spec.json").write_text(json.dumps(spec, indent=2))
            except OSError as error:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise JobError(f"Cannot write the job's snapshot to {job_dir}: {error.strerror}.") from None
            job_rows.set_spec(cur, job_id, spec, str(job_dir.relative_to(self.home.root)))
        log.info("Queued job %d: %s from %s on %d rows.", job_id, spec["method"], spec["base"], spec["rows"])
        return job_id

    def _version(self, cur, name: str | None, kind: str) -> dict:
        if name is None:
            name = models.active_policy(cur) if kind == "policy" else newest_reward(cur)
            if name is None:
                raise JobError("No policy is active: promote one, or name the base version to train from."
                               if kind == "policy" else
                               "This method needs a reward model and there is none yet: train one first"
                               " (method reward), or name a reward version.")
        version = models.get(cur, name)
        if version is None:
            known = ", ".join(models.names(cur)) or "none"
            raise JobError(f"There is no model version '{name}' (known versions: {known}).")
        if version["kind"] != kind:
            raise JobError(f"'{name}' is a {version['kind']} model; a {kind} model is needed here.")
        return version

    # -- looking -----------------------------------------------------------------------

    def get(self, job_id: int) -> dict:
        job = job_rows.get(self.store.cursor(), job_id)
        if job is None:
            raise JobError(f"There is no job {job_id}.")
        return job

    def list(self, limit: int | None = None) -> pd.DataFrame:
        return job_rows.list_jobs(self.store.cursor(), limit)

    def metrics(self, job_id: int) -> pd.DataFrame:
        return job_rows.metrics(self.store.cursor(), job_id)

    def job_dir(self, job_id: int) -> Path:
        return self.home.jobs_dir / str(job_id)

    def log_text(self, job_id: int, tail: int | None = None) -> str:
        return read_log(self.job_dir(self.get(job_id)["id"]), tail)

    def cancel(self, job_id: int) -> str:
        """Cancel a queued job at once, or ask a running one to stop; returns what was done."""
        job = self.get(job_id)
        if job["status"] == "queued":
            with self.store.transaction() as cur:
                if job_rows.cancel_queued(cur, job_id, "Cancelled before it started."):
                    return f"Job {job_id} was queued and is cancelled."
            job = self.get(job_id)  # the runner took it meanwhile: stop it as a running job
        if job["status"] != "running":
            raise JobError(f"Job {job_id} has already ended ({job['status']}).")
        ask_to_stop(self.job_dir(job_id), "Cancelled")
        return (f"Job {job_id} is stopping (it ends at its next step, or is killed"
                f" {CANCEL_GRACE_SECONDS} s after the stop was sent).")

    # -- ending ------------------------------------------------------------------------

    def finish(self, job_id: int, status: dict, exit_code: int | None) -> dict:
        """Record how the worker ended; on success move its model into place and register
        the version (the job and the version are written in one transaction)."""
        job = self.get(job_id)
        spec, job_dir = job["spec"], self.job_dir(job_id)
        state = status.get("state")
        if state == "succeeded" and (job_dir / "model").is_dir():
            return self._register(job_id, spec, status)
        stop_reason = stop_asked(job_dir)
        signalled = exit_code is not None and exit_code < 0
        if state == "cancelled" or exit_code == -signal.SIGTERM or (stop_reason and signalled):
            outcome = "cancelled"
            error = f"{stop_reason or 'Cancelled'} at step {status.get('step', 0)}."
            if exit_code == -signal.SIGKILL:
                error += " It had not stopped in time and was killed."
        else:
            outcome = "failed"
            error = status.get("error") if state == "failed" else worker_death(exit_code, job_dir)
        return self.end(job_id, outcome, error)

    def end(self, job_id: int, outcome: str, error: str) -> dict:
        """Record a job's end without a version (failed or cancelled) with its reason."""
        with self.store.transaction() as cur:
            job_rows.finish(cur, job_id, outcome, error)
        return self.get(job_id)

    def _register(self, job_id: int, spec: dict, status: dict) -> dict:
        """Move `model/` to `models/<version>/` and register it. The intent is written first:
        a crash before the commit leaves it, and `recover` moves the model back (then
        registers it again), so there is never a directory without a version or a version
        without weights."""
        job_dir = self.job_dir(job_id)
        name = spec["output_version"]
        target = self.home.model_dir(name)
        if target.exists():  # left by an attempt that crashed before the intent existed
            shutil.rmtree(target)
        _write_intent(job_dir, name, target)
        _move_into_place(job_dir / "model", target)
        metrics = status.get("metrics") or {}
        card = {
            "name": name, "kind": spec["kind"], "method": spec["method"], "parent": spec["base"],
            "base_model": spec["base_model"], "reward": spec.get("reward"), "job_id": job_id,
            "data_snapshot": str((job_dir / "data.parquet").relative_to(self.home.root)), "rows": spec["rows"],
            "weights": "adapter" if (target / "adapter_config.json").is_file() else "full",
            "config": spec["config"], "options": spec["options"], "selection": spec["selection"],
            "metrics": metrics, "train_seconds": status.get("seconds"),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            _write_card(target, card)
            with self.store.transaction() as cur:
                models.register(cur, name, spec["kind"], base_model=spec["base_model"],
                                path=str(target.relative_to(self.home.root)), method=spec["method"],
                                parent=spec["base"], job_id=job_id, data_snapshot=card["data_snapshot"],
                                metrics=metrics)
                job_rows.finish(cur, job_id, "succeeded", output_version=name)
        except BaseException:
            self._undo_move(job_id)  # no version without its row, no row without its weights
            raise
        _clear_intent(job_dir)
        return self.get(job_id)

    def _undo_move(self, job_id: int) -> None:
        """After a move into `models/` that was not registered: the model back into the
        job's directory. A registered version keeps its weights; the intent goes either way."""
        job_dir = self.job_dir(job_id)
        try:
            intent = json.loads((job_dir / INTENT_FILE).read_text())
        except (OSError, ValueError):
            return
        target = Path(intent["target"])
        if models.get(self.store.cursor(), intent["name"]) is None and target.is_dir():
            if (job_dir / "model").exists():  # both: the crash came before the move finished
                shutil.rmtree(target)
            else:
                target.rename(job_dir / "model")
            log.warning("Job %d: %s was moved into place but not registered; moved back.", job_id, intent["name"])
        _clear_intent(job_dir)

    def recover(self) -> None:
        """Jobs left 'running' by a process that ended: undo a model's move that was not
        registered, ingest a finished result, else mark them failed (and stop a worker still
        running without its watcher)."""
        for intent in self.home.jobs_dir.glob(f"*/{INTENT_FILE}"):  # a crash while moving a model
            self._undo_move(int(intent.parent.name))
        for job_id in job_rows.ids_with_status(self.store.cursor(), "running"):
            status = read_status(self.job_dir(job_id))
            if status.get("state") in ("succeeded", "failed", "cancelled"):
                self.finish(job_id, status, None)
                continue
            signal_worker(self.job_dir(job_id), signal.SIGKILL)
            self.end(job_id, "failed", "The process watching this job stopped before the job ended; see its log.")


# -- the files a worker writes -----------------------------------------------------------

def read_status(job_dir: Path) -> dict:
    try:
        return json.loads((job_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def read_log(job_dir: Path, tail: int | None = None) -> str:
    try:
        lines = (job_dir / "log.txt").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-tail:] if tail else lines)


def signal_worker(job_dir: Path, signum: int) -> bool:
    """Send a signal to the job's worker and its process group; False if none runs. The PID
    comes from worker.pid or status.json, which may be stale: it is signalled only while
    that process's command line is this job's worker."""
    for pid in (_pid_file(job_dir), read_status(job_dir).get("pid")):
        if isinstance(pid, int) and is_worker_of(pid, job_dir):
            return signal_group(pid, signum)
    return False


def is_worker_of(pid: int, job_dir: Path) -> bool:
    """Whether process `pid` runs `rlhf.worker` for `job_dir` (a reused PID does not)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        try:  # no /proc (macOS): ask ps
            words = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                                   timeout=5).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return False
    return "rlhf.worker" in words and str(Path(job_dir).absolute()) in words


def signal_group(pid: int, signum: int) -> bool:
    """`signum` to the process group `pid` leads (a worker runs in its own session), or to
    `pid` alone when it shares ours; False when it is gone."""
    try:
        group = os.getpgid(pid)
        if group == os.getpgrp():
            os.kill(pid, signum)
        else:
            os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _pid_file(job_dir: Path) -> int | None:
    try:
        return int((job_dir / "worker.pid").read_text())
    except (OSError, ValueError):
        return None


def ask_to_stop(job_dir: Path, reason: str) -> None:
    """Ask the runner watching the job to stop its worker; `reason` begins the job's error
    ("Cancelled", "Stopped with the server"). The first reason stays."""
    marker = job_dir / CANCEL_FILE
    if not marker.exists():
        staging = job_dir / (CANCEL_FILE + ".tmp")
        staging.write_text(json.dumps({"reason": reason, "at": time.time()}))
        os.replace(staging, marker)


def stop_asked(job_dir: Path) -> str | None:
    """The reason the job was asked to stop, if it was."""
    try:
        return json.loads((job_dir / CANCEL_FILE).read_text()).get("reason") or "Cancelled"
    except (OSError, ValueError):
        return None


# -- moving a trained model into place (each step apart: the crash tests stop between them) --

def _write_intent(job_dir: Path, name: str, target: Path) -> None:
    staging = job_dir / (INTENT_FILE + ".tmp")
    staging.write_text(json.dumps({"name": name, "target": str(target)}))
    os.replace(staging, job_dir / INTENT_FILE)


def _move_into_place(source: Path, target: Path) -> None:
    source.rename(target)


def _write_card(target: Path, card: dict) -> None:
    (target / "card.json").write_text(json.dumps(card, indent=2))


def _clear_intent(job_dir: Path) -> None:
    (job_dir / INTENT_FILE).unlink(missing_ok=True)


def worker_death(exit_code: int | None, job_dir: Path) -> str:
    last = read_log(job_dir, tail=1).strip()
    if exit_code is not None and exit_code < 0:
        how = f"was killed by signal {signal.Signals(-exit_code).name}"
    elif exit_code is not None:
        how = f"exited with code {exit_code}"
    else:
        how = "stopped"
    return f"The training process {how} before it finished" + (f"; last log line: {last}" if last else ".")


# -- running -------------------------------------------------------------------------------

def worker_command(job_dir: Path) -> list[str]:
    """`python -m rlhf.worker JOB_DIR`, or through a launcher such as
    `RLHF_LAUNCHER="accelerate launch --num_processes 2"` for several GPUs. The directory is
    absolute: it is how a PID read back from a file is recognised as this job's worker."""
    launcher = os.environ.get("RLHF_LAUNCHER", "").strip()
    job_dir = str(Path(job_dir).absolute())
    if launcher:
        return [*shlex.split(launcher), "-m", "rlhf.worker", job_dir]
    return [sys.executable, "-m", "rlhf.worker", job_dir]


def start_worker(job_dir: Path, cwd: Path) -> subprocess.Popen:
    """The worker in its own session (so a stop reaches every process it starts), its
    output in log.txt, its PID in worker.pid."""
    (job_dir / "metrics.jsonl").touch()
    with open(job_dir / "log.txt", "ab") as log_file:
        process = subprocess.Popen(worker_command(job_dir), stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=cwd, start_new_session=True)
    (job_dir / "worker.pid").write_text(str(process.pid))
    return process


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the worker's process group, SIGKILL to it after `grace` seconds; returns
    once the worker has ended."""
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        process.wait()


class JobRunner:
    """Runs queued jobs one at a time, in the foreground (`run`) or in a background
    thread (`start`), beside a second thread that answers requests from CLIs."""

    def __init__(self, jobs: Jobs, poll_seconds: float = 0.5):
        self.jobs, self.poll_seconds = jobs, poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stop_grace = CANCEL_GRACE_SECONDS  # how long a worker gets when the runner stops

    def run(self, job_id: int, on_progress: Callable[[dict], None] | None = None) -> dict:
        """Run one queued job to its end; returns the job's final row. Whatever goes wrong
        here ends the job (failed, with the reason): none is left 'running'."""
        jobs = self.jobs
        with jobs.store.transaction() as cur:
            if not job_rows.mark_running(cur, job_id):
                return jobs.get(job_id)  # cancelled while it waited
        return self._run_marked(job_id, jobs.job_dir(job_id), on_progress)

    def _run_marked(self, job_id: int, job_dir: Path, on_progress) -> dict:
        jobs = self.jobs
        try:
            process = start_worker(job_dir, jobs.home.root)
        except (OSError, ValueError) as error:  # no such launcher, unreadable RLHF_LAUNCHER, no disk
            return jobs.end(job_id, "failed", f"The training process could not start: {error}.")
        watcher = _Watcher(jobs, job_id, job_dir)
        try:
            self._watch(process, watcher, on_progress)
        except KeyboardInterrupt:  # Ctrl-C in `rlhf train`: stop the worker cleanly, then record it
            ask_to_stop(job_dir, "Interrupted")
            stop_process(process, CANCEL_GRACE_SECONDS)
        except Exception as error:  # nothing trains unwatched
            log.exception("Watching job %d failed; stopping its worker.", job_id)
            stop_process(process, CANCEL_GRACE_SECONDS)
            return jobs.end(job_id, "failed", f"Watching the job failed ({type(error).__name__}: {error});"
                                              " its training process was stopped.")
        finally:
            (job_dir / "worker.pid").unlink(missing_ok=True)
        try:
            return jobs.finish(job_id, watcher.update() or read_status(job_dir), process.returncode)
        except Exception as error:
            log.exception("Recording the end of job %d failed.", job_id)
            return jobs.end(job_id, "failed", f"The job's result could not be recorded ({type(error).__name__}:"
                                              f" {error}).")

    def _watch(self, process: subprocess.Popen, watcher: "_Watcher", on_progress) -> None:
        """Follow the worker until it ends, copying its progress into the store. When the
        job is cancelled or the runner stops: SIGTERM to its group, SIGKILL after the grace."""
        term_sent: float | None = None
        while process.poll() is None:
            status = watcher.update()
            if on_progress and status:
                on_progress(status)
            if self._stop.is_set():
                ask_to_stop(watcher.job_dir, "Stopped with the server")
            if term_sent is None and stop_asked(watcher.job_dir):
                signal_group(process.pid, signal.SIGTERM)
                term_sent = time.monotonic()
            grace = self.stop_grace if self._stop.is_set() else CANCEL_GRACE_SECONDS
            if term_sent is not None and time.monotonic() - term_sent > grace:
                signal_group(process.pid, signal.SIGKILL)
            time.sleep(self.poll_seconds)

    def run_queued(self) -> int | None:
        """Run the oldest queued job, if any; returns its id."""
        job_id = job_rows.next_queued(self.jobs.store.cursor())
        if job_id is not None:
            self.run(job_id)
        return job_id

    # -- in the server --------------------------------------------------------------------

    def start(self) -> None:
        self.jobs.recover()
        self._threads = [threading.Thread(target=self._loop, name="job-runner", daemon=True),
                         threading.Thread(target=self._answer_loop, name="job-requests", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, grace: float = CANCEL_GRACE_SECONDS) -> None:
        """Stop a running job (SIGTERM, SIGKILL after `grace` s) and wait for both threads
        a little longer than that."""
        self.stop_grace = grace
        self._stop.set()
        deadline = time.monotonic() + grace + 2
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_queued() is None:
                    self._stop.wait(1.0)
            except Exception:  # the runner must outlive one bad job
                log.exception("The job runner hit an error; it goes on with the next job.")
                self._stop.wait(1.0)

    def _answer_loop(self) -> None:
        """Requests from CLIs, answered while a job runs too (the job thread is busy then)."""
        while not self._stop.is_set():
            try:
                answer_requests(self.jobs)
            except Exception:  # an unreadable requests folder must not end the answering
                log.exception("Answering job requests failed; trying again.")
            self._stop.wait(REQUEST_POLL_SECONDS)


class _Watcher:
    """Copies a running worker's status.json and new metrics.jsonl lines into the store."""

    def __init__(self, jobs: Jobs, job_id: int, job_dir: Path):
        self.jobs, self.job_id, self.job_dir = jobs, job_id, job_dir
        self.offset = 0
        self.last_step: tuple | None = None

    def update(self) -> dict:
        status = read_status(self.job_dir)
        rows = self._new_metrics()
        progress = (status.get("step", 0), status.get("total"))
        if rows or (status and progress != self.last_step):
            with self.jobs.store.transaction() as cur:
                job_rows.add_metrics(cur, self.job_id, rows)
                if status:
                    job_rows.set_progress(cur, self.job_id, int(progress[0] or 0), progress[1])
            self.last_step = progress
        return status

    def _new_metrics(self) -> list[dict]:
        try:
            with open(self.job_dir / "metrics.jsonl", encoding="utf-8") as source:
                source.seek(self.offset)
                text = source.read()
        except OSError:
            return []
        complete = text[: text.rfind("\n") + 1]  # a line still being written waits for the next look
        self.offset += len(complete.encode("utf-8"))
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


# -- requests from a CLI while the server holds the store ---------------------------------

def requests_dir(home: Home) -> Path:
    return home.jobs_dir / "requests"


def send_request(home: Home, payload: dict, wait_seconds: float = REQUEST_WAIT_SECONDS) -> dict:
    """Hand a request to the server's job runner and wait for its answer."""
    directory = requests_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex
    staging = directory / f".{request_id}.tmp"
    staging.write_text(json.dumps(payload))
    staging.rename(directory / f"{request_id}.json")
    reply = directory / f"{request_id}.reply.json"
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if reply.is_file():
            answer = json.loads(reply.read_text())
            reply.unlink(missing_ok=True)
            return answer
        time.sleep(0.2)
    (directory / f"{request_id}.json").unlink(missing_ok=True)
    raise JobError(f"The server did not answer within {wait_seconds:.0f} s (is a job holding it?); try again.")


def answer_requests(jobs: Jobs) -> None:
    """Submit or cancel what CLIs asked for, replying to each in a file beside it."""
    directory = requests_dir(jobs.home)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):
        if path.name.endswith(".reply.json"):
            continue
        try:
            payload = json.loads(path.read_text())
            if payload.get("action") == "cancel":
                answer = {"message": jobs.cancel(int(payload["job_id"]))}
            else:
                request = JobRequest(**{k: v for k, v in payload.items() if k != "action"})
                answer = {"job_id": jobs.submit(request)}
        except UserError as error:
            answer = {"error": str(error)}
        except Exception as error:  # a malformed request file must not stop the runner
            answer = {"error": f"The request could not be read: {error}"}
        reply = path.with_name(path.stem + ".reply.json")
        reply.with_suffix(".tmp").write_text(json.dumps(answer))
        reply.with_suffix(".tmp").rename(reply)
        path.unlink(missing_ok=True)

