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
`jobs/requests/`; the server's runner answers them.
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
        if not signal_worker(self.job_dir(job_id), signal.SIGTERM):
            raise JobError(f"Job {job_id} is starting; cancel it again in a moment.")
        return f"Job {job_id} is stopping (it ends at its next step)."

    # -- ending ------------------------------------------------------------------------

    def finish(self, job_id: int, status: dict, exit_code: int | None) -> dict:
        """Record how the worker ended; on success move its model into place and register
        the version (the job and the version are written in one transaction)."""
        job = self.get(job_id)
        spec, job_dir = job["spec"], self.job_dir(job_id)
        state = status.get("state")
        if state == "succeeded" and (job_dir / "model").is_dir():
            return self._register(job_id, spec, status)
        if state == "cancelled" or exit_code == -signal.SIGTERM:
            outcome, error = "cancelled", f"Cancelled at step {status.get('step', 0)}."
        else:
            outcome = "failed"
            error = status.get("error") if state == "failed" else worker_death(exit_code, job_dir)
        with self.store.transaction() as cur:
            job_rows.finish(cur, job_id, outcome, error)
        return self.get(job_id)

    def _register(self, job_id: int, spec: dict, status: dict) -> dict:
        job_dir = self.job_dir(job_id)
        name = spec["output_version"]
        target = self.home.model_dir(name)
        if target.exists():  # left by an earlier attempt that failed to register
            shutil.rmtree(target)
        (job_dir / "model").rename(target)
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
        (target / "card.json").write_text(json.dumps(card, indent=2))
        try:
            with self.store.transaction() as cur:
                models.register(cur, name, spec["kind"], base_model=spec["base_model"],
                                path=str(target.relative_to(self.home.root)), method=spec["method"],
                                parent=spec["base"], job_id=job_id, data_snapshot=card["data_snapshot"],
                                metrics=metrics)
                job_rows.finish(cur, job_id, "succeeded", output_version=name)
        except BaseException:
            target.rename(job_dir / "model")  # no version without its row, no row without its weights
            raise
        return self.get(job_id)

    def recover(self) -> None:
        """Jobs left 'running' by a process that ended: ingest a finished result, else
        mark them failed (and stop a worker still running without its watcher)."""
        for job_id in job_rows.ids_with_status(self.store.cursor(), "running"):
            status = read_status(self.job_dir(job_id))
            if status.get("state") in ("succeeded", "failed", "cancelled"):
                self.finish(job_id, status, None)
                continue
            signal_worker(self.job_dir(job_id), signal.SIGKILL)
            with self.store.transaction() as cur:
                job_rows.finish(cur, job_id, "failed",
                                "The process watching this job stopped before the job ended; see its log.")


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
    """Send a signal to the job's worker (its PID is in status.json); False if none runs."""
    pid = read_status(job_dir).get("pid") or _pid_file(job_dir)
    if not pid:
        return False
    try:
        os.kill(int(pid), signum)
    except (OSError, ValueError):
        return False
    return True


def _pid_file(job_dir: Path) -> int | None:
    try:
        return int((job_dir / "worker.pid").read_text())
    except (OSError, ValueError):
        return None


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
    `RLHF_LAUNCHER="accelerate launch --num_processes 2"` for several GPUs."""
    launcher = os.environ.get("RLHF_LAUNCHER", "").strip()
    if launcher:
        return [*shlex.split(launcher), "-m", "rlhf.worker", str(job_dir)]
    return [sys.executable, "-m", "rlhf.worker", str(job_dir)]


class JobRunner:
    """Runs queued jobs one at a time, in the foreground (`run`) or in a background
    thread that also answers requests from CLIs (`start`)."""

    def __init__(self, jobs: Jobs, poll_seconds: float = 0.5):
        self.jobs, self.poll_seconds = jobs, poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: int | None = None

    def run(self, job_id: int, on_progress: Callable[[dict], None] | None = None) -> dict:
        """Run one queued job to its end; returns the job's final row."""
        jobs = self.jobs
        job_dir = jobs.job_dir(job_id)
        with jobs.store.transaction() as cur:
            if not job_rows.mark_running(cur, job_id):
                return jobs.get(job_id)  # cancelled while it waited
        self.current = job_id
        (job_dir / "metrics.jsonl").touch()
        with open(job_dir / "log.txt", "ab") as log_file:
            process = subprocess.Popen(worker_command(job_dir), stdout=log_file, stderr=subprocess.STDOUT,
                                       cwd=jobs.home.root, start_new_session=True)
        (job_dir / "worker.pid").write_text(str(process.pid))
        watcher = _Watcher(jobs, job_id, job_dir)
        stop_sent: float | None = None
        try:
            while process.poll() is None:
                status = watcher.update()
                if on_progress and status:
                    on_progress(status)
                if self._stop.is_set() and stop_sent is None:
                    process.send_signal(signal.SIGTERM)
                    stop_sent = time.monotonic()
                if stop_sent and time.monotonic() - stop_sent > CANCEL_GRACE_SECONDS:
                    process.kill()
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:  # Ctrl-C in `rlhf train`: stop the worker cleanly, then record it
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(CANCEL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            self.current = None
        status = watcher.update() or read_status(job_dir)
        (job_dir / "worker.pid").unlink(missing_ok=True)
        return jobs.finish(job_id, status, process.returncode)

    def run_queued(self) -> int | None:
        """Run the oldest queued job, if any; returns its id."""
        job_id = job_rows.next_queued(self.jobs.store.cursor())
        if job_id is not None:
            self.run(job_id)
        return job_id

    # -- in the server --------------------------------------------------------------------

    def start(self) -> None:
        self.jobs.recover()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = CANCEL_GRACE_SECONDS + 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                answer_requests(self.jobs)
                if self.run_queued() is None:
                    self._stop.wait(1.0)
            except Exception:  # the runner must outlive one bad job
                log.exception("The job runner hit an error; it goes on with the next job.")
                self._stop.wait(1.0)


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

