"""The files of a job's directory, read and written by the service, the runner and the CLI:
`status.json`, `log.txt`, `worker.pid`, the `cancel` marker and the `registering.json`
intent, and the signalling of the worker process they name (only while that PID is
still this job's worker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

CANCEL_GRACE_SECONDS = 15


CANCEL_FILE = "cancel"            # {"reason": ...}: the runner stops the worker


INTENT_FILE = "registering.json"  # {"name", "target"}: a model is being moved into place


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
    for pid in (pid_file(job_dir), read_status(job_dir).get("pid")):
        if isinstance(pid, int) and is_worker_of(pid, job_dir):
            return signal_group(pid, signum)
    return False


def is_worker_of(pid: int, job_dir: Path) -> bool:
    """Whether process `pid` runs `rlhf.jobs.worker` for `job_dir` (a reused PID does not)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        try:  # no /proc (macOS): ask ps
            words = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                                   timeout=5).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return False
    return "rlhf.jobs.worker" in words and str(Path(job_dir).absolute()) in words


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


def pid_file(job_dir: Path) -> int | None:
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


def write_intent(job_dir: Path, name: str, target: Path) -> None:
    staging = job_dir / (INTENT_FILE + ".tmp")
    staging.write_text(json.dumps({"name": name, "target": str(target)}))
    os.replace(staging, job_dir / INTENT_FILE)


def move_into_place(source: Path, target: Path) -> None:
    source.rename(target)


def write_card(target: Path, card: dict) -> None:
    (target / "card.json").write_text(json.dumps(card, indent=2))


def clear_intent(job_dir: Path) -> None:
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
