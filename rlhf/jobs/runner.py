"""`JobRunner`: runs queued jobs one at a time in a worker subprocess (`python -m
rlhf.jobs.worker JOB_DIR`, in its own session), copies its progress and metrics into the
store, stops it on a cancel (SIGTERM, then SIGKILL after CANCEL_GRACE_SECONDS) and, on
success, has `Jobs` register the trained model. A thread of it answers the CLI's requests.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from rlhf.jobs.files import (CANCEL_GRACE_SECONDS, ask_to_stop, clear_ranks, read_status, signal_group, signal_ranks,
                             stop_asked)
from rlhf.jobs.requests import REQUEST_POLL_SECONDS, answer_requests
from rlhf.jobs.service import Jobs
from rlhf.train import ranks
from storage import jobs as job_rows

log = logging.getLogger(__name__)


def worker_command(job_dir: Path, method: str | None = None) -> list[str]:
    """`python -m rlhf.jobs.worker JOB_DIR`, or through a launcher such as
    `RLHF_LAUNCHER="accelerate launch --multi_gpu --num_processes 2"` (one worker per rank;
    `--num_processes 2` alone starts one) or `"accelerate launch --config_file
    configs/accelerate/ddp.yaml"`; a `method` that trains in one process only (PPO) is
    started without it. The directory is absolute: it is how a PID read back from a file is
    recognised as this job's worker."""
    launcher = "" if method and ranks.one_process(method) else os.environ.get("RLHF_LAUNCHER", "").strip()
    job_dir = str(Path(job_dir).absolute())
    if launcher:
        return [*shlex.split(launcher), "-m", "rlhf.jobs.worker", job_dir]
    return [sys.executable, "-m", "rlhf.jobs.worker", job_dir]


def start_worker(job_dir: Path, cwd: Path) -> subprocess.Popen:
    """The worker in its own session (so a stop reaches every process it starts), its
    output in log.txt, its PID in worker.pid."""
    (job_dir / "metrics.jsonl").touch()
    try:
        method = json.loads((job_dir / "spec.json").read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        method = None  # the worker says what is wrong with its spec
    with open(job_dir / "log.txt", "ab") as log_file:
        if method and ranks.one_process(method) and os.environ.get("RLHF_LAUNCHER", "").strip():
            log_file.write(f"{method} trains in one process: started without RLHF_LAUNCHER.\n".encode())
            log_file.flush()
        process = subprocess.Popen(worker_command(job_dir, method), stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=cwd, start_new_session=True)
    (job_dir / "worker.pid").write_text(str(process.pid))
    return process


def stop_process(process: subprocess.Popen, job_dir: Path, grace: float) -> None:
    """SIGTERM to the worker's process group, SIGKILL to it after `grace` seconds; returns
    once the worker has ended."""
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        kill(process, job_dir)
        process.wait()


def kill(process: subprocess.Popen, job_dir: Path) -> None:
    """SIGKILL to the worker's process group and to every rank a launcher started (each in
    a session of its own)."""
    signal_group(process.pid, signal.SIGKILL)
    signal_ranks(job_dir, signal.SIGKILL)


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
            stop_process(process, job_dir, CANCEL_GRACE_SECONDS)
        except Exception as error:  # nothing trains unwatched
            log.exception("Watching job %d failed; stopping its worker.", job_id)
            stop_process(process, job_dir, CANCEL_GRACE_SECONDS)
            return jobs.end(job_id, "failed", f"Watching the job failed ({type(error).__name__}: {error});"
                                              " its training process was stopped.")
        finally:
            (job_dir / "worker.pid").unlink(missing_ok=True)
            signal_ranks(job_dir, signal.SIGKILL)  # a rank the launcher left behind when it ended
            clear_ranks(job_dir)
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
                kill(process, watcher.job_dir)
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
