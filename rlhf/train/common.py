"""What every trainer shares: the inputs it gets, progress reporting, precision, adapters
(LoRA, prompt tuning, full, QLoRA), loading parents that are themselves adapters, and
saving the result."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)

from rlhf.errors import UserError
from rlhf.train.schedule import Schedule, schedule

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"

# PEFT reads transformers 5's deprecated alias whenever it wraps a model; the warning is
# PEFT's to fix and says nothing to our users.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class TrainingError(UserError):
    """A job that cannot train, in one sentence (too little data, a bad setting, ...)."""


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
        self.is_main = job_dir is not None and os.environ.get("RANK", "0") == "0"

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
        if self.reporter.cancel_requested:
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
    """Rows of one optimiser step: the batch times the gradient accumulation."""
    batch = int(config.get("per_device_train_batch_size") or default_batch)
    return max(1, batch * int(config.get("gradient_accumulation_steps") or 1))


# -- precision and devices -------------------------------------------------------------

def on_gpu() -> bool:
    return torch.cuda.is_available()


def precision_args() -> dict[str, Any]:
    """Explicit precision for TRL configs (which default to bf16 where they can): bf16 on
    a GPU that supports it, fp32 elsewhere; the CPU when there is no GPU."""
    bf16 = on_gpu() and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": False, "use_cpu": not on_gpu()}


def model_dtype() -> torch.dtype:
    return torch.bfloat16 if on_gpu() and torch.cuda.is_bf16_supported() else torch.float32


def workbench_trainer_args(out_dir: Path) -> dict[str, Any]:
    """TrainingArguments that are the workbench's, never a job's: the Trainer's scratch in
    the job's directory, no checkpoints (the worker saves the result once), no external
    loggers, logging every step, precision for this device."""
    return {
        "output_dir": str(out_dir.parent / "trainer"),  # the Trainer's scratch, kept out of the model
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


# -- data -------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """Parquet hands nested lists back as numpy arrays and structs as dicts with every
    field; turn a cell back into plain lists and {role, content} messages."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict) and "role" in value and "content" in value:
        return {"role": value["role"], "content": value["content"]}
    return value


def to_dataset(frame: pd.DataFrame, columns: list[str]):
    """A `datasets.Dataset` of the given columns, cells made plain."""
    from datasets import Dataset

    return Dataset.from_list([{c: plain(row[c]) for c in columns} for row in frame.to_dict("records")])


def split_by_comparison(frame: pd.DataFrame, eval_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and held-out rows, split by `comparison_id` so no comparison is in both.

    With fewer than two comparisons, or `eval_fraction` 0, everything trains."""
    comparisons = np.array(sorted(frame["comparison_id"].unique()))
    n_eval = int(round(len(comparisons) * eval_fraction))
    if eval_fraction <= 0 or len(comparisons) < 2:
        return frame, frame.iloc[0:0]
    n_eval = min(max(n_eval, 1), len(comparisons) - 1)
    held_out = set(np.random.default_rng(seed).permutation(comparisons)[:n_eval].tolist())
    mask = frame["comparison_id"].isin(held_out)
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)


# -- models and adapters ----------------------------------------------------------------

def is_adapter(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: Path) -> Path:
    """The directory an adapter was trained on (written by `save_model`)."""
    return Path(json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    path = Path(path)
    while not (path / "tokenizer_config.json").is_file() and is_adapter(path):
        path = adapter_base(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path, quantize_4bit: bool = False) -> PreTrainedModel:
    """A causal LM from a full-weights directory, or from a LoRA adapter directory (its
    base loaded the same way, recursively, and the adapter merged in)."""
    path = Path(path)
    if is_adapter(path):
        from peft import PeftModel

        if json.loads((path / ADAPTER_CONFIG).read_text()).get("peft_type") != "LORA":
            raise TrainingError(
                f"{path.name} is a prompt-tuned version; train from its parent, or from a LoRA or full version."
            )
        base = load_causal_lm(adapter_base(path))
        # PEFT loads an adapter for inference and freezes the weights; merged, the parent is
        # a plain model again, trainable like one loaded from full weights
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload().requires_grad_(True)
    kwargs: dict[str, Any] = {"dtype": model_dtype()}
    if quantize_4bit:
        kwargs["quantization_config"] = bnb_4bit_config()
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


def load_adapted_policy(path: Path) -> PreTrainedModel:
    """A policy version for sampling: LoRA merged into its base, a soft prompt kept as a
    PEFT model (it cannot be merged)."""
    from peft import PeftModel

    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") == "LORA":
        return load_causal_lm(path)
    return PeftModel.from_pretrained(load_causal_lm(adapter_base(path)), str(path))


def load_reward_model(path: Path) -> PreTrainedModel:
    """A scalar-head sequence classifier saved by the reward trainer (full weights)."""
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=model_dtype())
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    return model


ADAPTERS = ("lora", "prompt", "full", "qlora")


def bnb_4bit_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=model_dtype(), bnb_4bit_use_double_quant=True)


def check_adapter(options: dict[str, Any]) -> None:
    """Refuse what cannot run here before any model is loaded."""
    adapter = options.get("adapter", "lora")
    if adapter not in ADAPTERS:
        raise TrainingError(f"adapter must be one of {', '.join(ADAPTERS)}, not '{adapter}'.")
    if adapter == "qlora":
        if not on_gpu():
            raise TrainingError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit); use adapter=lora on the CPU.")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes.")


def peft_config(options: dict[str, Any], task_type: str):
    """The PEFT config for `options["adapter"]`, or None for full fine-tuning.

    task_type: "CAUSAL_LM" for policies, "SEQ_CLS" for reward/value models (the scalar
    head is then trained in full beside the adapter)."""
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit

    check_adapter(options)
    adapter = options.get("adapter", "lora")
    if adapter == "full":
        return None
    if adapter == "prompt":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=int(options.get("num_virtual_tokens", 8)),
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    return LoraConfig(task_type=task_type, r=int(options.get("lora_r", 16)),
                      lora_alpha=int(options.get("lora_alpha", 32)),
                      lora_dropout=float(options.get("lora_dropout", 0.0)),
                      target_modules=options.get("lora_target", "all-linear"))


def save_model(model, tokenizer: PreTrainedTokenizerBase, out_dir: Path, base_path: Path, merge: bool) -> str:
    """Write the trained model to `out_dir`: a PEFT adapter whose base is `base_path`, or
    full weights (full fine-tuning, or `merge` of a LoRA). Returns "adapter" or "full"."""
    from peft import PeftModel

    out_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    kind = "full"
    if isinstance(model, PeftModel):
        config = model.peft_config[model.active_adapter]
        if merge and config.peft_type.value == "LORA":
            model = model.merge_and_unload()
        elif merge:
            raise TrainingError("Only a LoRA adapter can be merged into full weights.")
        else:
            config.base_model_name_or_path = str(Path(base_path).resolve())
            kind = "adapter"
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return kind
