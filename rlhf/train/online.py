"""Online policy training against the trained reward model: GRPO and RLOO (REINFORCE
leave-one-out), with TRL's GRPOTrainer and RLOOTrainer. The policy samples
`num_generations` completions per prompt, the reward model scores each (the chat-templated
prompt + completion, as the reward trainer saw its pairs), and the policy moves toward
the completions scored above their group's mean, held near the starting policy by a KL
penalty (`beta`)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable

from rlhf.train import common, guard, ranks
from rlhf.modeling import loading, prefix
from rlhf.train.common import TrainInputs
from rlhf.errors import TrainingError
from rlhf.preference.combination import is_combination
from rlhf.train.plumbing import MicroBatch, callbacks, conversational, fit, load_trl_policy, require_columns, trainer_config

log = logging.getLogger(__name__)

ONLINE_METHODS = ("grpo", "rloo")


def _trl(method: str) -> tuple[type, type]:
    if method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    if method == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    raise TrainingError(f"Unknown online method '{method}': choose {' or '.join(ONLINE_METHODS)}.")


def _prompts(frame, columns: tuple[str, ...] = ()) -> Any:
    """The distinct prompts (as message lists), in first-seen order, with `columns` beside
    them where the frame has them."""
    require_columns(frame, ["prompt"], "prompt")
    if len(frame) == 0:
        return frame
    frame = conversational(frame[["prompt", *(c for c in columns if c in frame.columns)]].copy())
    if "category" in frame.columns:   # one type for the dataset's column: "" where a prompt has none
        frame["category"] = [c if isinstance(c, str) else "" for c in frame["category"]]
    key = frame["prompt"].map(lambda turns: tuple((m["role"], m["content"]) for m in turns))
    frame = frame[[bool(turns) and bool(str(turns[-1]["content"]).strip()) for turns in frame["prompt"]]]
    return frame.loc[~key.loc[frame.index].duplicated()].reset_index(drop=True)


def _reward_curve(trainer) -> dict[str, float]:
    """Mean reward of the first and the last logged step and over all of them."""
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    if not rewards:
        return {}
    return {"train/reward_first": float(rewards[0]), "train/reward_last": float(rewards[-1]),
            "train/reward_mean": float(sum(rewards) / len(rewards))}


def _reference_dir(inputs: TrainInputs, policy, beta: float) -> None:
    """Full fine-tuning with a KL penalty: TRL reloads the reference from the model's
    config name, which for a LoRA parent names the parent's base. Point it at the parent
    itself, merged, saved in a scratch folder (removed after training)."""
    if beta == 0 or policy.peft_config is not None or not loading.is_adapter(inputs.base_path):
        return
    # one per rank under a launcher: no rank reads another's half-written copy
    scratch = common.scratch_dir(inputs.out_dir) / f"reference-{ranks.rank()}"
    policy.model.save_pretrained(str(scratch), safe_serialization=True)
    policy.model.config._name_or_path = str(scratch)


def train(inputs: TrainInputs, method: str, reward_fn: Callable[..., list[float]] | None = None) -> dict[str, float]:
    """GRPO (`method="grpo"`) or RLOO (`"rloo"`) on the `prompt` column (messages), with the
    reward model at `inputs.reward_path` as reward function, or `reward_fn` when given (a
    TRL reward function, `reward_fn(prompts, completions, **columns) -> [float]`: a rule
    to test learning against). Returns train loss, the
    reward curve (`train/reward_first`, `train/reward_last`, `train/reward_mean`), the
    final `train/kl` and `train/examples` (distinct prompts)."""
    config_class, trainer_class = _trl(method)
    if inputs.reward_path is None and reward_fn is None:
        raise TrainingError(f"{method.upper()} needs a reward model: train one (method reward) and choose it.")
    combination = reward_fn is None and is_combination(Path(inputs.reward_path))
    # a combination's gate reads each prompt's category, which TRL hands a reward function as a column
    prompts = _prompts(inputs.data, ("category",) if combination else ())
    if len(prompts) == 0:
        raise TrainingError(f"{method.upper()} needs at least one prompt to sample completions for.")
    policy = load_trl_policy(inputs)
    reward_model, reward_tokenizer = reward_fn, None
    if combination:   # several reward models as one reward function (rlhf.modeling.scoring.CombinedScorer)
        inputs.reporter.progress(0, None, message="loading the reward models")
        from rlhf.modeling.scoring import load_scorer

        reward_model = load_scorer(Path(inputs.reward_path))
    elif reward_fn is None:
        inputs.reporter.progress(0, None, message="loading the reward model")
        reward_model = loading.load_reward_model(inputs.reward_path)
        reward_model.eval().requires_grad_(False)
        reward_tokenizer = loading.load_tokenizer(inputs.reward_path)
    generations = int(inputs.config.get("num_generations") or 1)
    decided = common.plan(inputs, method, len(prompts), common.examples_per_step(inputs.config), "prompts",
                          samples_per_prompt=generations)
    config = trainer_config(config_class, inputs, MicroBatch.of(policy, prompts, generated="max_completion_length"),
                            eval_strategy="no", **decided.settings)
    if getattr(config, "use_vllm", False) and importlib.util.find_spec("vllm") is None:
        raise TrainingError("use_vllm needs the vllm package (and a GPU); leave use_vllm off.")
    try:
        _reference_dir(inputs, policy, float(getattr(config, "beta", 0.0)))
        trainer = trainer_class(
            model=policy.model,
            reward_funcs=reward_model,
            args=config,
            train_dataset=common.to_dataset(prompts, [c for c in ("prompt", "category") if c in prompts.columns]),
            processing_class=policy.tokenizer,
            reward_processing_classes=reward_tokenizer,
            peft_config=policy.peft_config,
            callbacks=callbacks(inputs),
        )
        prefix.enable(trainer.model)   # its rollouts sample with the prefix (PEFT's generate drops it)
        metrics = fit(trainer, inputs, policy, {"train": len(prompts)}, evaluate=False)
    finally:
        common.remove_scratch(inputs.out_dir)
    metrics.update(_reward_curve(trainer))
    metrics.update(decided.metrics())
    metrics.update(guard.report(inputs, method, None, guard.prompts_of(prompts,
                                                                      limit=inputs.options.get("guard_prompts", 0))))
    return metrics


def train_grpo(inputs: TrainInputs) -> dict[str, float]:
    return train(inputs, "grpo")


def train_rloo(inputs: TrainInputs) -> dict[str, float]:
    return train(inputs, "rloo")
