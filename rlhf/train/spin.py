"""Self-play fine-tuning (SPIN; Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak
Language Models to Strong Language Models", arXiv:2401.01335), with TRL's DPOTrainer for
each iteration.

Iteration t = 1..T takes the prompts that have a human answer (the rows SFT imitates:
`rlhf.jobs.training_data.demonstrations`, written better answers, top-ranked and imported
chosen answers), lets the policy of iteration t-1 answer each one itself, and trains a
DPO loss with the human answer as chosen and the policy's own answer as rejected, the
policy of iteration t-1 as the reference (the paper's eq. 4.7 with the logistic loss,
which is DPO's with beta = lambda). Iteration 0 is the job's base version.

The final iteration is the job's model (`out_dir`); each earlier one is saved under
`out_dir/iterations/<t>/` with its `iteration.json` (its metrics), and `rlhf.jobs.service`
registers them as versions, each the parent of the next. After every iteration the
held-out human answers' mean log-likelihood under the policy is logged
(`spin/heldout_logp`, at the job's step where the iteration ended), beside the base's at
step 0; the iterations' training steps follow one another (`IterationReporter`).

Settings are `SpinSettings` (options of the method, `rlhf.train.methods`); the DPO fields
(beta, learning_rate, ...) are DPOConfig's, and each iteration's epochs and learning rate
come from `rlhf.train.schedule` (at DPO's learning rates) for its number of pairs.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf.settings import setting

log = logging.getLogger(__name__)

ITERATIONS_DIR = "iterations"      # earlier iterations inside the job's model: iterations/<t>/
ITERATION_FILE = "iteration.json"  # an earlier iteration's metrics
SPIN_COLUMNS = ["prompt", "chosen", "rejected"]


@dataclass(frozen=True)
class SpinSettings:
    """SPIN's own settings (the method's options; DPOConfig's fields are set as for DPO)."""

    iterations: int = setting(2, "self-play iterations; each one samples the policy's own answers, trains on them"
                                 " and registers a version whose parent is the previous iteration")
    spin_temperature: float = setting(0.7, "sampling temperature of the policy's own answers (the rejected side)")
    spin_top_p: float = setting(1.0, "nucleus (top-p) of the policy's own answers")
    spin_max_new_tokens: int = setting(96, "longest answer the policy writes for itself, in tokens")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "SpinSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in options.items() if key in names})


def iteration_dirs(model_dir: Path) -> list[Path]:
    """The earlier iterations saved inside a SPIN model, in order (none for other models)."""
    folder = Path(model_dir) / ITERATIONS_DIR
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name))


def iteration_metrics(iteration_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(iteration_dir) / ITERATION_FILE).read_text())
    except (OSError, ValueError):
        return {}


def human_answers(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with a non-blank human answer (`completion`), as `prompt` and `chosen`
    message lists with their `comparison_id`."""
    from rlhf.train.plumbing import conversational, has_text

    frame = frame[[has_text(c) for c in frame["completion"]]] if len(frame) else frame
    frame = conversational(frame, completions=("completion",)).rename(columns={"completion": "chosen"})
    return frame.reset_index(drop=True)


def self_play_pairs(frame: pd.DataFrame, own_answers: list[str]) -> pd.DataFrame:
    """`frame` (`prompt`, `chosen`, ...) with the policy's own answers as `rejected`; rows
    where the policy wrote the human answer itself say nothing and are dropped."""
    from rlhf.train.plumbing import is_preference

    frame = frame.assign(rejected=[[{"role": "assistant", "content": text}] for text in own_answers])
    keep = [is_preference(c, r) for c, r in zip(frame["chosen"], frame["rejected"])]
    return frame[keep].reset_index(drop=True)


def own_answers(model, tokenizer, prompts: list[list[dict]], settings: SpinSettings, seed: int) -> list[str]:
    """One sampled answer of `model` per prompt (the rejected side of SPIN)."""
    import torch

    from rlhf.modeling.generate import sample
    from rlhf.modeling.models import Policy
    from rlhf.modeling.sampling import SamplingParams

    if not prompts:
        return []
    params = SamplingParams(temperature=settings.spin_temperature, top_p=settings.spin_top_p,
                            max_new_tokens=settings.spin_max_new_tokens, seed=seed)
    side = tokenizer.padding_side
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            drawn = sample(Policy(model, tokenizer, "spin"), prompts, k=1, params=params)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [samples[0].text for samples in drawn]


def heldout_logp(model, tokenizer, frame: pd.DataFrame) -> float | None:
    """Mean over `frame`'s rows of log p(human answer | prompt), summed over the answer's
    tokens (`rlhf.modeling.logprobs.completion_logprobs`); None without rows."""
    from rlhf.modeling.logprobs import completion_logprobs

    if frame.empty:
        return None
    return float(completion_logprobs(model, tokenizer, list(frame["prompt"]), list(frame["chosen"])).mean())


class IterationReporter:
    """The job's reporter as one iteration's trainer sees it: its steps 1..n become the
    job's steps after those of the earlier iterations (`offset`), so that no iteration's
    metrics replace another's, and its total is guessed as the iterations left times this
    one's. Everything else (cancellation above all) is the job's reporter's."""

    def __init__(self, reporter, offset: int, iterations_left: int):
        self._reporter, self.offset, self.iterations_left = reporter, offset, iterations_left

    def progress(self, step: int, total: int | None, state: str = "running", message: str = "") -> None:
        total = None if total is None else self.offset + total * self.iterations_left
        self._reporter.progress(self.offset + step, total, state, message)

    def metrics(self, step: int, values: dict[str, Any]) -> None:
        self._reporter.metrics(self.offset + step, values)

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def _policy(inputs, previous: Path | None):
    """The policy to train in an iteration and its reference, the previous iteration (the
    job's base for the first). A LoRA iteration goes on training the same adapter (saved
    on the job's base), against the previous one merged into its base as reference; full
    weights (full, last_layers, a merged LoRA) are loaded as the next job's base would be."""
    from peft import PeftModel

    from rlhf.modeling import loading
    from rlhf.train.plumbing import TrlPolicy, load_trl_policy

    if previous is None:
        return load_trl_policy(inputs, reference=True)
    if not loading.is_adapter(previous):
        return load_trl_policy(dataclasses.replace(inputs, base_path=previous), reference=True)
    inputs.reporter.progress(inputs.reporter.step, None, message="loading the previous iteration")
    tokenizer = loading.load_tokenizer(inputs.base_path)
    model = PeftModel.from_pretrained(loading.load_causal_lm(inputs.base_path), str(previous), is_trainable=True)
    reference = loading.load_causal_lm(previous).eval().requires_grad_(False)
    for each in (model, reference):
        each.config.pad_token_id = tokenizer.pad_token_id
    return TrlPolicy(model, tokenizer, None, reference)


def train(inputs) -> dict[str, float]:
    """SPIN on `prompt`, `completion` rows (a human answer each; `comparison_id` splits off
    the held-out rows). Returns the last iteration's DPO metrics, `spin/iterations`,
    `spin/heldout_logp/<t>` for t = 0..T and the guardrails of the final policy against
    the job's base."""
    from trl import DPOConfig, DPOTrainer

    from rlhf.errors import TrainingError
    from rlhf.train import common, guard
    from rlhf.train.plumbing import MicroBatch, fit, require_columns, split, trainer_config, trl_trainer

    settings = SpinSettings.from_options(inputs.options)
    if settings.iterations < 1:
        raise TrainingError(f"SPIN needs at least one iteration, not {settings.iterations}.")
    require_columns(inputs.data, ["prompt", "completion"], "SPIN")
    frame = human_answers(inputs.data)
    if frame.empty:
        raise TrainingError("SPIN needs prompts with a human answer (a written better answer, a top-ranked or an"
                            " imported chosen completion), and the data has none.")
    train_frame, eval_frame = split(inputs, frame)
    seed = int(inputs.config.get("seed", 0) or 0)
    metrics: dict[str, float] = {"spin/iterations": float(settings.iterations)}
    previous: Path | None = None
    base_logp = None
    for t in range(1, settings.iterations + 1):
        last = t == settings.iterations
        policy = _policy(inputs, previous)
        inputs.reporter.progress(inputs.reporter.step, None, message=f"iteration {t}: sampling the policy's answers")
        if t == 1:
            base_logp = heldout_logp(policy.model, policy.tokenizer, eval_frame)
            if base_logp is not None:
                inputs.reporter.metrics(0, {"spin/heldout_logp": base_logp})
                metrics["spin/heldout_logp/0"] = base_logp
            # the base's own answers to the held-out prompts: the pairs of the final guardrails
            held_out = self_play_pairs(eval_frame, own_answers(policy.model, policy.tokenizer,
                                                               list(eval_frame["prompt"]), settings, seed))
        pairs = self_play_pairs(train_frame, own_answers(policy.model, policy.tokenizer, list(train_frame["prompt"]),
                                                         settings, seed + t))
        inputs.reporter.check_cancelled()
        if pairs.empty:
            raise TrainingError(f"In iteration {t} the policy wrote every human answer itself: there is nothing"
                                " left for SPIN to learn.")
        decided = common.plan(inputs, "spin", len(pairs), common.examples_per_step(inputs.config),
                              f"self-play pairs (iteration {t})")
        config = trainer_config(DPOConfig, inputs, MicroBatch.of(policy, pairs, ("chosen", "rejected")),
                                eval_strategy="no", **decided.settings)
        out_dir = inputs.out_dir if last else inputs.out_dir / ITERATIONS_DIR / str(t)
        stage = dataclasses.replace(inputs, out_dir=out_dir, reporter=IterationReporter(
            inputs.reporter, inputs.reporter.step, settings.iterations - t + 1))
        trainer = trl_trainer(DPOTrainer, stage, policy, config, pairs, pairs.iloc[0:0], SPIN_COLUMNS,
                              ref_model=policy.reference)
        iteration = fit(trainer, stage, policy, {"train": len(pairs)}, evaluate=False)
        logp = heldout_logp(trainer.model, policy.tokenizer, eval_frame)
        if logp is not None:
            iteration["spin/heldout_logp"] = logp
            inputs.reporter.metrics(inputs.reporter.step, {"spin/heldout_logp": logp, "spin/iteration": t})
            metrics[f"spin/heldout_logp/{t}"] = logp
        log.info("SPIN iteration %d of %d: %d pairs, train loss %.4f, held-out log-likelihood %s.", t,
                 settings.iterations, len(pairs), iteration["train/loss"], "n/a" if logp is None else f"{logp:.2f}")
        iteration = {**iteration, **decided.metrics(), "spin/iteration": float(t)}
        if not last:
            (out_dir / ITERATION_FILE).write_text(json.dumps(iteration))
        previous = out_dir
        del trainer, policy, stage
        gc.collect()  # the iteration's models before the next ones are loaded
    metrics.update({key: value for key, value in iteration.items() if key != "spin/heldout_logp"})
    metrics["eval/examples"] = float(len(eval_frame))
    checked = guard.report(inputs, "spin", held_out, guard.prompts_of(eval_frame, train_frame,
                                                                      limit=inputs.options.get("guard_prompts", 0)))
    return {**metrics, **checked}
