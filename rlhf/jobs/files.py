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
    """Send a signal to the job's worker and its process group, and to each rank a launcher
    started (`signal_ranks`); False if none runs. The PID comes from worker.pid or
    status.json, which may be stale: it is signalled only while that process's command
    line is this job's worker."""
    ranks = signal_ranks(job_dir, signum)
    for pid in (pid_file(job_dir), read_status(job_dir).get("pid")):
        if isinstance(pid, int) and is_worker_of(pid, job_dir):
            return signal_group(pid, signum) or ranks > 0
    return ranks > 0


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


# -- ranks under a launcher (`RLHF_LAUNCHER`): each worker process leaves its PID ---------------
# torchrun starts each rank in a session of its own, so the launcher's process group does
# not hold them: a SIGKILL to the launcher alone would leave them training.

RANK_PID = "rank-{}.pid"
RANK_FAILED = "rank-{}.failed.json"  # {"rank", "world_size", "error"}: a rank other than 0 failed


def write_rank_pid(job_dir: Path, rank: int) -> None:
    (job_dir / RANK_PID.format(rank)).write_text(str(os.getpid()))


def rank_pids(job_dir: Path) -> list[int]:
    pids = []
    for path in sorted(job_dir.glob(RANK_PID.format("*"))):
        try:
            pids.append(int(path.read_text()))
        except (OSError, ValueError):
            pass
    return pids


def signal_ranks(job_dir: Path, signum: int) -> int:
    """`signum` to each rank of the job still running as its worker; how many were signalled."""
    return sum(signal_group(pid, signum) for pid in rank_pids(job_dir) if is_worker_of(pid, job_dir))


def clear_ranks(job_dir: Path) -> None:
    for path in job_dir.glob(RANK_PID.format("*")):
        path.unlink(missing_ok=True)


def write_rank_failure(job_dir: Path, rank: int, world_size: int, error: str, at: float) -> None:
    """What a rank other than 0 leaves when it fails (rank 0 writes status.json); `at`: when
    (time.time()), since the first failure is the cause and the others' broken connections follow."""
    staging = job_dir / (RANK_FAILED.format(rank) + ".tmp")
    staging.write_text(json.dumps({"rank": rank, "world_size": world_size, "error": error, "at": at}))
    os.replace(staging, job_dir / RANK_FAILED.format(rank))


def rank_failure(job_dir: Path) -> tuple[float, str] | None:
    """When the first rank other than 0 failed and why, as one sentence; None if none did."""
    found = []
    for path in job_dir.glob(RANK_FAILED.format("*")):
        try:
            failed = json.loads(path.read_text())
            who = f"Rank {int(failed['rank'])} of {int(failed['world_size'])}"
            error = str(failed["error"])
            found.append((float(failed["at"]), error if error.startswith(who) else f"{who} failed: {error}"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(found) if found else None


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
