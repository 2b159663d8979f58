"""A training job's process: `python -m rlhf.jobs.worker JOB_DIR`.

Reads `spec.json` and `data.parquet`, trains, and writes `status.json`,
`metrics.jsonl` and the model under `model/` (trained into `model.partial/` and renamed
only when complete). It never opens DuckDB: the process that owns the store ingests what
the worker leaves. SIGTERM asks for a clean stop at the next training step; a second one
ends the process at once. Under a launcher (`RLHF_LAUNCHER`) one such process runs per
rank: every rank trains, rank 0 alone writes (`rlhf.train.ranks`), each leaves its PID in
`rank-N.pid`.
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a job never downloads from a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads yield the cores to the server

log = logging.getLogger("rlhf.jobs.worker")

MODEL_DIR, PARTIAL_DIR = "model", "model.partial"


def read_spec(job_dir: Path) -> dict:
    return json.loads((job_dir / "spec.json").read_text())


def run(job_dir: Path) -> int:
    """Train the job in `job_dir`; returns the process exit code (0 succeeded, 1 failed,
    2 cancelled). The outcome is always written to status.json (by rank 0 under a launcher;
    another rank that fails writes rank-N.failed.json)."""
    from rlhf.jobs import files
    from rlhf.train import ranks
    from rlhf.train.common import Cancelled, Reporter

    reporter = Reporter(job_dir)
    _on_sigterm(reporter)
    started = time.monotonic()
    spec = read_spec(job_dir)
    rank, world = ranks.rank(), ranks.world_size()
    if world > 1:  # under a launcher: each rank can be stopped by its own PID
        files.write_rank_pid(job_dir, rank)
        ranks.prepare_device()
        log.info("Rank %d of %d (PID %d) starts.", rank, world, os.getpid())
    reporter.write_status({"state": "starting", "step": 0, "total": None, "pid": os.getpid()})
    partial = job_dir / PARTIAL_DIR
    if reporter.is_main:  # the model folders are rank 0's alone
        shutil.rmtree(partial, ignore_errors=True)
    try:
        metrics = train(spec, job_dir, reporter)
        if world > 1:
            log.info("Rank %d of %d trained %s steps over %s.", rank, world, reporter.step, _process_group())
        if reporter.is_main:
            partial.rename(job_dir / MODEL_DIR)
    except BaseException as error:  # every failure is reported, none leaves a model
        if reporter.is_main:
            shutil.rmtree(partial, ignore_errors=True)
        # a stop asked for ends as cancelled, however the ranks' process group broke up meanwhile
        if isinstance(error, (Cancelled, SystemExit)) or reporter.cancel_requested:
            log.info("Cancelled at step %s%s.", reporter.step,
                     f" (rank {rank} of {world} over {_process_group()})" if world > 1 else "")
            reporter.write_status({"state": "cancelled", "step": reporter.step, "total": reporter.total,
                                   **({"world_size": world} if world > 1 else {})})
            return 2
        reason = ranks.lost_peer_reason(error, rank, world, reporter.step) or failure_reason(error)
        failed_at = time.time()
        log.error("Failed: %s\n%s", reason, traceback.format_exc())
        reporter.write_status({"state": "failed", "step": reporter.step, "total": reporter.total, "error": reason,
                               "failed_at": failed_at})
        if not reporter.is_main:
            files.write_rank_failure(job_dir, rank, world, reason, failed_at)
        return 1
    seconds = round(time.monotonic() - started, 1)
    log.info("Succeeded in %.1f s: %s", seconds, json.dumps(metrics))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reporter.write_status({"state": "succeeded", "step": reporter.step, "total": reporter.total,
                           "metrics": metrics, "seconds": seconds, "peak_rss_mib": round(peak_mib, 1)})
    return 0


def train(spec: dict, job_dir: Path, reporter) -> dict[str, float]:
    import pandas as pd
    import torch

    from rlhf.errors import TrainingError
    from rlhf.modeling.threads import available_cores, worker_threads
    from rlhf.train import ranks
    from rlhf.train.common import TrainInputs
    from rlhf.train.methods import method

    chosen = method(spec["method"])
    refused = ranks.refusal(chosen.name)
    if refused:
        raise TrainingError(refused)
    torch.manual_seed(int(spec["config"].get("seed", 0)))
    if not torch.cuda.is_available():
        torch.set_num_threads(worker_threads(available_cores()))
    inputs = TrainInputs(
        data=pd.read_parquet(job_dir / "data.parquet"),
        base_path=Path(spec["base_path"]),
        out_dir=job_dir / PARTIAL_DIR,
        config=spec["config"],
        options=spec["options"],
        reward_path=Path(spec["reward_path"]) if spec.get("reward_path") else None,
        reporter=reporter,
        given=frozenset(spec["settings"]) if "settings" in spec else None,  # older specs: all of config
    )
    log.info("Training %s from %s on %d rows (%s).", chosen.name, spec["base"], len(inputs.data),
             "GPU" if torch.cuda.is_available() else "CPU")
    trainer = importlib.import_module(chosen.module)
    if chosen.module.endswith(".online"):
        return trainer.train(inputs, chosen.name)
    return trainer.train(inputs)


def _process_group() -> str:
    """The backend the ranks trained over ("gloo", "nccl"), or "no process group" when each trained alone."""
    import torch.distributed as dist

    return dist.get_backend() if dist.is_available() and dist.is_initialized() else "no process group"


def failure_reason(error: BaseException) -> str:
    """One sentence for the job's error column."""
    from rlhf.errors import UserError

    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "The disk is full: free space in the workbench home and run the job again."
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return ("Out of memory: lower per_device_train_batch_size or max_length, or use adapter=lora.")
    if isinstance(error, KeyboardInterrupt):
        return "Interrupted."
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _on_sigterm(reporter) -> None:
    def stop(signum, frame):
        if reporter.cancel_requested:  # asked twice: stop now
            raise SystemExit(2)
        log.info("Stop requested; stopping at the next step.")
        reporter.cancel_requested = True

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rlhf.jobs.worker JOB_DIR", file=sys.stderr)
        return 64
    from rlhf.train import ranks

    rank = f"[rank {ranks.rank()}] " if ranks.world_size() > 1 else ""  # whose line it is, under a launcher
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {rank}%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    return run(Path(args[0]).absolute())


if __name__ == "__main__":
    sys.exit(main())
