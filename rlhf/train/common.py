"""What every trainer shares: the inputs it gets, progress reporting (status.json,
metrics.jsonl, cancellation), the workbench's trainer arguments and the held-out split.
Loading and saving models is :mod:`rlhf.modeling.loading`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import (
    TrainerCallback,
)

from rlhf.preference.messages import plain
from rlhf.modeling.loading import precision_args
from rlhf.train import ranks
from rlhf.train.schedule import Schedule, schedule

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job was asked to stop (SIGTERM); nothing is registered."""


class Reporter:
    """Where a trainer says how far it is: `status.json` (replaced atomically) and
    `metrics.jsonl` (one line per logged step) in the job directory, or only in memory
    when `job_dir` is None (tests). `cancel_requested` is set by the worker's SIGTERM
    handler; trainers stop at the next step when it is set."""

    def __init__(self, job_dir: Path | None = None):
        self.job_dir = job_dir
        self.history: list[dict[str, float]] = []
        self.cancel_requested = False
        self.started = time.monotonic()
        self.step, self.total = 0, None
        # under `accelerate launch` every process trains; only the first one reports
        self.is_main = job_dir is not None and ranks.is_main()

    def progress(self, step: int, total: int | None, state: str = "running", message: str = "") -> None:
        self.step, self.total = step, total
        elapsed = time.monotonic() - self.started
        eta = elapsed / step * (total - step) if step and total else None
        self.write_status({"state": state, "step": step, "total": total,
                           "elapsed_seconds": round(elapsed, 1),
                           "eta_seconds": None if eta is None else round(eta, 1), "message": message})

    def metrics(self, step: int, values: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))}
        if not numbers:
            return
        row = {"step": int(step), **numbers}
        self.history.append(row)
        if self.is_main:
            with open(self.job_dir / "metrics.jsonl", "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")

    def write_status(self, status: dict) -> None:
        if not self.is_main:
            return
        staging = self.job_dir / "status.json.tmp"
        staging.write_text(json.dumps(status))
        os.replace(staging, self.job_dir / "status.json")

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise Cancelled()


class ReporterCallback(TrainerCallback):
    """Bridges a transformers/TRL Trainer to the Reporter: progress each step, metrics each
    log, and a clean stop when the job is cancelled."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def on_step_end(self, args, state, control, **kwargs):
        self.reporter.progress(state.global_step, state.max_steps)
        # under a launcher every rank stops at the same step, or the others wait for it forever
        if ranks.any_rank(self.reporter.cancel_requested):
            self.reporter.cancel_requested = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.reporter.metrics(state.global_step, logs or {})


@dataclass
class TrainInputs:
    """Everything a trainer gets. `config` holds TRL config field overrides (already
    checked by `rlhf.train.methods.resolve`), `options` the workbench's own options
    (adapter, lora_r, eval_fraction, ... with defaults filled in). `given` names the
    settings the user chose; the others in `config` are the method's defaults, which the
    data-sized schedule may replace. None: every value in `config` was chosen."""

    data: pd.DataFrame
    base_path: Path
    out_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    reward_path: Path | None = None
    reporter: Reporter = field(default_factory=Reporter)
    given: frozenset[str] | None = None


def plan(inputs: TrainInputs, method: str, rows: int, per_step: int, what: str,
         samples_per_prompt: int = 1) -> Schedule:
    """The job's schedule for `rows` training rows (`rlhf.train.schedule`), logged in one
    line; the trainer builds its config with `settings` on top of `inputs.config`."""
    given = inputs.config if inputs.given is None else \
        {key: value for key, value in inputs.config.items() if key in inputs.given}
    decided = schedule(rows, method, str(inputs.options.get("adapter", "lora")), per_step, given,
                       samples_per_prompt=samples_per_prompt, what=what)
    log.info("Schedule: %s", decided.reason)
    return decided


def examples_per_step(config: dict[str, Any], default_batch: int = 8) -> int:
    """Rows of one optimiser step: the batch times the gradient accumulation times the ranks
    (under a launcher each rank takes its own batch of every step)."""
    batch = int(config.get("per_device_train_batch_size") or default_batch)
    return max(1, batch * int(config.get("gradient_accumulation_steps") or 1) * ranks.world_size())


def scratch_dir(out_dir: Path) -> Path:
    """The Trainer's scratch folder, beside the model folder so nothing of it is saved with
    the model; `remove_scratch` deletes it when the job ends."""
    return Path(out_dir).parent / "trainer"


def remove_scratch(out_dir: Path) -> None:
    """Delete the scratch folder (no checkpoints are kept: the worker saves the result once);
    rank 0's job under a launcher."""
    if ranks.is_main():
        shutil.rmtree(scratch_dir(out_dir), ignore_errors=True)


def activation_checkpointing(inputs: TrainInputs, model_config, micro_batch_tokens: int) -> dict[str, bool]:
    """`activation_checkpointing` as `rlhf.train.memory` decides it for a micro-batch of
    `micro_batch_tokens` tokens (padded) on a model of `model_config` (the reason logged),
    or nothing when the job's settings name it."""
    from rlhf.train import memory

    chosen = inputs.config if inputs.given is None else inputs.given
    if "activation_checkpointing" in chosen or "gradient_checkpointing" in chosen:
        return {}
    per_token = memory.activation_bytes_per_token(model_config.num_hidden_layers, model_config.hidden_size,
                                                  model_config.intermediate_size)
    on, why = memory.needs_checkpointing(micro_batch_tokens, per_token, memory.available_bytes())
    log.info("Memory: %s", why)
    return {"activation_checkpointing": on}


def workbench_trainer_args(out_dir: Path) -> dict[str, Any]:
    """TrainingArguments that are the workbench's, never a job's: the Trainer's scratch in
    the job's directory, no checkpoints (the worker saves the result once), no external
    loggers, logging every step, precision for this device."""
    return {
        "output_dir": str(scratch_dir(out_dir)),
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "disable_tqdm": True,
        **precision_args(),
    }


def trainer_args(out_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The job's settings over the workbench's defaults, and the workbench's own arguments
    over both: `methods.resolve` refuses a setting of those, and whatever reaches a trainer
    by another way cannot move its files, upload, or report elsewhere either."""
    defaults = {
        "seed": 0,
        "activation_checkpointing": False,  # TRL turns it on; for a small model it only costs time
        "remove_unused_columns": True,
    }
    return {**defaults, **config, **workbench_trainer_args(out_dir)}


def to_dataset(frame: pd.DataFrame, columns: list[str]):
    """A `datasets.Dataset` of the given columns, cells made plain."""
    from datasets import Dataset

    return Dataset.from_list([{c: plain(row[c]) for c in columns} for row in frame.to_dict("records")])


def split_by_comparison(frame: pd.DataFrame, eval_fraction: float, seed: int,
                        key: str = "comparison_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and held-out rows, split by `comparison_id` (or another `key`: a corpus's
    chunk) so no comparison is in both: a seeded permutation of them, its first
    round(n * eval_fraction) (at least one) held out.

    With fewer than two comparisons, or `eval_fraction` 0, everything trains."""
    comparisons = np.array(sorted(frame[key].unique()))
    n_eval = int(round(len(comparisons) * eval_fraction))
    if eval_fraction <= 0 or len(comparisons) < 2:
        return frame, frame.iloc[0:0]
    n_eval = min(max(n_eval, 1), len(comparisons) - 1)
    held_out = set(np.random.default_rng(seed).permutation(comparisons)[:n_eval].tolist())
    mask = frame[key].isin(held_out)
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
