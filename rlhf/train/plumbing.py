"""The plumbing every TRL policy trainer shares (sft, dpo, kto, grpo, rloo): loading the
policy and its adapter, building the TRL config, the held-out split, and training,
evaluating and saving with metrics named the workbench's way (`train/loss`,
`eval/rewards/margins`, `train/examples`, ...).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rlhf.preference.messages import as_messages
from rlhf.errors import TrainingError
from rlhf.modeling import loading
from rlhf.train import common, ranks
from rlhf.train.common import TrainInputs

log = logging.getLogger(__name__)


@dataclass
class TrlPolicy:
    """A loaded policy, ready to hand to a TRL trainer."""

    model: Any
    tokenizer: Any
    peft_config: Any            # None: full fine-tuning
    reference: Any = None       # a frozen copy for full fine-tuning (PEFT disables the adapter instead)


def load_trl_policy(inputs: TrainInputs, reference: bool = False) -> TrlPolicy:
    """The policy at `inputs.base_path` (full weights, or a LoRA version merged into its
    base), its tokenizer and the PEFT config of `options["adapter"]`. With `reference`
    and full fine-tuning, also a second frozen copy as the reference model (TRL would
    otherwise reload the reference from the config's name, which for a LoRA parent is
    the parent's base, not the parent)."""
    options = inputs.options
    peft = loading.peft_config(options, "CAUSAL_LM")  # checks the adapter (and that it can merge) first
    inputs.reporter.progress(0, None, message="loading the policy")
    quantize = options.get("adapter") == "qlora"
    model = loading.load_causal_lm(inputs.base_path, quantize_4bit=quantize)
    loading.own_adapter(model, options)
    tokenizer = loading.load_tokenizer(inputs.base_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    ref = None
    if reference and peft is None:
        ref = loading.load_causal_lm(inputs.base_path)
        ref.config.pad_token_id = tokenizer.pad_token_id
        ref.eval().requires_grad_(False)
    return TrlPolicy(model, tokenizer, peft, ref)


def trainer_config(config_class: type, inputs: TrainInputs, micro_batch: "MicroBatch | None" = None, **fixed: Any):
    """`config_class` built from `common.trainer_args` (the job's settings under the
    workbench's own arguments), then `fixed` (values this trainer needs whatever the job says).
    With the `micro_batch` the data makes, activation checkpointing is turned on where
    `rlhf.train.memory` says its activations would not fit (unless the job's settings name it)."""
    values = {**common.trainer_args(inputs.out_dir, inputs.config), **fixed}
    config = _built(config_class, values)
    if micro_batch is not None:
        decided = common.activation_checkpointing(inputs, micro_batch.model_config, micro_batch.tokens(config))
        if decided.get("activation_checkpointing"):
            config = _built(config_class, {**values, **decided})
    return config


def _built(config_class: type, values: dict[str, Any]):
    try:
        return config_class(**values)
    except (ValueError, TypeError) as error:
        raise TrainingError(f"Invalid setting: {str(error).strip().splitlines()[0]}") from None


@dataclass(frozen=True)
class MicroBatch:
    """The shape of a policy trainer's micro-batch, for the memory rule: each example is
    `sequences` sequences (DPO: chosen and rejected; KTO: the completion and the mismatched
    one of its KL estimate) of at most `longest` tokens (cut at the config's `max_length`),
    padded to the longest, and for an online method as many tokens again as the config's
    `generated` setting lets it sample (GRPO's `max_completion_length`)."""

    model_config: Any
    longest: int
    sequences: int = 1
    generated: str | None = None

    def tokens(self, config) -> int:
        cap = getattr(config, "max_length", None)
        longest = min(self.longest, cap) if cap else self.longest
        longest += int(getattr(config, self.generated) or 0) if self.generated else 0
        return int(config.per_device_train_batch_size) * self.sequences * longest

    @classmethod
    def of(cls, policy: "TrlPolicy", frame: pd.DataFrame, completions: tuple[str, ...] = (),
           sequences: int | None = None, generated: str | None = None) -> "MicroBatch":
        """Of conversational rows (`conversational`): the longest prompt with one of its
        `completions` (none: the prompt alone), as the chat template renders it; an example
        is one sequence per completion unless `sequences` says otherwise."""
        from rlhf.modeling.scoring import encode_conversation

        longest = max((len(encode_conversation(policy.tokenizer, row["prompt"],
                                               answer_of(row[column]) or "" if column else ""))
                       for row in frame.to_dict("records") for column in completions or (None,)), default=0)
        return cls(policy.model.config, longest, sequences or max(len(completions), 1), generated)


def conversational(frame: pd.DataFrame, prompt: str = "prompt", completions: tuple[str, ...] = ()) -> pd.DataFrame:
    """A copy of `frame` whose prompt and completion cells are message lists."""
    frame = frame.copy()
    frame[prompt] = [as_messages(v, "user") for v in frame[prompt]]
    for column in completions:
        frame[column] = [as_messages(v, "assistant") for v in frame[column]]
    return frame


def answer_of(completion: Any) -> str | None:
    """A completion cell's answer text, "" for an empty answer (saying nothing can be the
    preferred answer, as in HH-RLHF), None where the cell holds no answer at all."""
    if completion is None or (isinstance(completion, float) and math.isnan(completion)):
        return None
    turns = as_messages(completion, "assistant")
    return str(turns[-1].get("content") or "") if turns else None


def has_text(completion: Any) -> bool:
    """Whether a completion cell holds a non-blank answer (what a demonstration must be)."""
    return bool((answer_of(completion) or "").strip())


def is_preference(chosen: Any, rejected: Any) -> bool:
    """Whether a pair says something: two answers, empty ones included, that differ."""
    chosen, rejected = answer_of(chosen), answer_of(rejected)
    return chosen is not None and rejected is not None and chosen.strip() != rejected.strip()


def require_columns(frame: pd.DataFrame, columns: list[str], method: str) -> None:
    """Refuse rows without the columns a method reads (an empty frame passes: the caller
    says what data is missing)."""
    missing = [c for c in columns if c not in frame.columns] if len(frame) else []
    if missing:
        raise TrainingError(f"The {method} data has no column {', '.join(missing)}.")


def split(inputs: TrainInputs, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and held-out rows by comparison (`eval_fraction`); without a comparison_id
    column everything trains."""
    if "comparison_id" not in frame.columns:
        return frame.reset_index(drop=True), frame.iloc[0:0]
    seed = int(inputs.config.get("seed", 0) or 0)
    return common.split_by_comparison(frame, float(inputs.options.get("eval_fraction", 0.0)), seed)


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def train_metrics(trainer) -> dict[str, float]:
    """The last training log (TRL's per-step metrics: loss, rewards/margins, kl, ...) as
    `train/<name>`."""
    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]
    skip = {"step", "epoch", "learning_rate", "grad_norm"}
    last = _numbers(logs[-1]) if logs else {}
    return {f"train/{k}": v for k, v in last.items() if k not in skip}


def eval_metrics(trainer) -> dict[str, float]:
    """`trainer.evaluate()` on the held-out split, as `eval/<name>`."""
    values = _numbers(trainer.evaluate())
    return {"eval/" + k.removeprefix("eval_"): v for k, v in values.items()
            if k != "epoch" and not k.endswith("_per_second")}


def fit(trainer, inputs: TrainInputs, policy: TrlPolicy, counts: dict[str, int], evaluate: bool = True) -> dict[str, float]:
    """Train, stop cleanly if the job was cancelled, evaluate on the held-out split, save
    the result to `inputs.out_dir`, and return the final metrics."""
    inputs.reporter.check_cancelled()
    result = trainer.train()
    inputs.reporter.check_cancelled()
    metrics: dict[str, float] = {**train_metrics(trainer)}
    metrics["train/loss"] = float(result.training_loss)
    metrics["train/steps"] = float(result.global_step)
    metrics["train/runtime_s"] = float(result.metrics.get("train_runtime", 0.0))
    metrics.update({f"{name}/examples": float(n) for name, n in counts.items()})
    if evaluate and trainer.eval_dataset is not None and counts.get("eval", 0) > 0:
        inputs.reporter.progress(trainer.state.global_step, trainer.state.max_steps, message="evaluating")
        metrics.update(eval_metrics(trainer))
        inputs.reporter.check_cancelled()
    inputs.reporter.progress(trainer.state.global_step, trainer.state.max_steps, message="saving")
    if ranks.is_main():  # under a launcher every rank holds the same weights (DDP, ZeRO-2): one saves them
        kind = loading.save_model(trainer.model, policy.tokenizer, inputs.out_dir, inputs.base_path,
                                 merge=bool(inputs.options.get("merge", False)))
        log.info("Saved the trained policy (%s) to %s", kind, inputs.out_dir)
    common.remove_scratch(inputs.out_dir)
    return metrics


def callbacks(inputs: TrainInputs) -> list:
    return [common.ReporterCallback(inputs.reporter)]


def trl_trainer(trainer_class: type, inputs: TrainInputs, policy: TrlPolicy, config, train_frame: pd.DataFrame,
                eval_frame: pd.DataFrame, columns: list[str], **extra):
    """A TRL trainer (SFTTrainer; DPOTrainer and KTOTrainer with `ref_model` in `extra`)
    on the split rows, reporting through the job's callbacks."""
    return trainer_class(
        model=policy.model,
        args=config,
        train_dataset=common.to_dataset(train_frame, columns),
        eval_dataset=common.to_dataset(eval_frame, columns) if len(eval_frame) else None,
        processing_class=policy.tokenizer,
        peft_config=policy.peft_config,
        callbacks=callbacks(inputs),
        **extra,
    )
