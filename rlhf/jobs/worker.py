"""A training job's process: `python -m rlhf.jobs.worker JOB_DIR`.

Reads `spec.json` and `data.parquet`, trains, and writes `status.json`,
`metrics.jsonl` and the model under `model/` (trained into `model.partial/` and renamed
only when complete). It never opens DuckDB: the process that owns the store ingests what
the worker leaves. SIGTERM asks for a clean stop at the next training step; a second one
ends the process at once.
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
    2 cancelled). The outcome is always written to status.json."""
    from rlhf.train.common import Cancelled, Reporter

    reporter = Reporter(job_dir)
    _on_sigterm(reporter)
    started = time.monotonic()
    spec = read_spec(job_dir)
    reporter.write_status({"state": "starting", "step": 0, "total": None, "pid": os.getpid()})
    partial = job_dir / PARTIAL_DIR
    shutil.rmtree(partial, ignore_errors=True)
    try:
        metrics = train(spec, job_dir, reporter)
        if reporter.is_main:
            partial.rename(job_dir / MODEL_DIR)
    except (Cancelled, SystemExit):
        shutil.rmtree(partial, ignore_errors=True)
        log.info("Cancelled at step %s.", reporter.step)
        reporter.write_status({"state": "cancelled", "step": reporter.step, "total": reporter.total})
        return 2
    except BaseException as error:  # every failure is reported, none leaves a model
        shutil.rmtree(partial, ignore_errors=True)
        reason = failure_reason(error)
        log.error("Failed: %s\n%s", reason, traceback.format_exc())
        reporter.write_status({"state": "failed", "step": reporter.step, "total": reporter.total, "error": reason})
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

    from rlhf.jobs.threads import available_cores, worker_threads
    from rlhf.train.common import TrainInputs
    from rlhf.train.methods import method

    chosen = method(spec["method"])
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    return run(Path(args[0]).absolute())


if __name__ == "__main__":
    sys.exit(main())
