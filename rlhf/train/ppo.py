"""PPO against a reward model: the workbench's own trainer (TRL 1.x has no PPOTrainer).

It follows the TL;DR reproduction of Huang et al. 2024, "The N+ Implementation Details of
RLHF with PPO" (arXiv:2403.17031), and reads top to bottom as one loop:

    for each iteration (= one batch of rollouts):
        rollout     sample a response for `batch_size` prompts from the policy
        score       the reward model (or `reward_fn`) scores prompt + response, read at the
                    last real token; a response cut off without EOS scores -1
        rewards     per-token KL penalty against the reference, the score at the last token
        GAE         advantages and returns from the value model's values; whiten advantages
        optimise    `num_ppo_epochs` passes over shuffled minibatches: clipped policy loss +
                    vf_coef * clipped value loss, one AdamW step per minibatch

The policy is the base model with a LoRA adapter (or a soft prompt, or full weights); the
frozen reference is the same model with the adapter switched off (a frozen copy for full
fine-tuning). The value model is a second sequence classifier, started from the reward
model (or from the policy's base with a fresh scalar head when `reward_fn` replaces the
reward model), with its own LoRA and a trainable head. The formulas live in
`rlhf.train.ppo_functions`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from rlhf.preference.messages import as_messages, plain
from rlhf.modeling import scoring
from rlhf.modeling.scoring import CombinedScorer, RewardScorer
from rlhf.train import common, guard
from rlhf.modeling import loading, prefix
from rlhf.train.common import TrainInputs
from rlhf.errors import TrainingError
from rlhf.train.schedule import lora_rate
from rlhf.settings import setting
from rlhf.train.ppo_functions import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    entropy_from_logits,
    gae,
    kl_penalty_rewards,
    logprobs_from_logits,
    masked_mean,
    policy_loss,
    value_loss,
    whiten,
)

log = logging.getLogger(__name__)

RewardFn = Callable[[list[list[dict]], list[str]], torch.Tensor]


@dataclass
class PPOConfig:
    """PPO settings. Names follow TRL's former PPOConfig where it had the setting; defaults
    follow the TL;DR reproduction (Huang et al. 2024) except the sizes and the learning rate
    (LoRA on SmolLM2-135M): 10 iterations of 8 rollouts of at most 48 tokens, a CPU-sized
    demonstration (on two shared cores, about a minute per iteration). A job's learning_rate
    and max_steps come from `rlhf.train.schedule` (one pass over its prompts, 10 to 30
    iterations) unless its settings name them."""

    learning_rate: float = setting(lora_rate("ppo"), "AdamW learning rate for the policy's adapter and the value model")
    max_steps: int = setting(10, "PPO iterations: each samples `batch_size` rollouts and optimises on them")
    batch_size: int = setting(8, "rollouts (prompt + response) per iteration")
    mini_batch_size: int = setting(4, "rollouts per optimiser step; must divide batch_size")
    num_ppo_epochs: int = setting(4, "passes over each batch of rollouts")
    gamma: float = setting(1.0, "discount factor of GAE")
    lam: float = setting(0.95, "lambda of GAE (bias/variance trade-off)")
    cliprange: float = setting(0.2, "policy ratio clipping: the ratio is kept in [1 - cliprange, 1 + cliprange]")
    cliprange_value: float = setting(0.2, "value clipping: a value moves at most this far from its rollout-time"
                                          " estimate")
    vf_coef: float = setting(0.1, "weight of the value loss beside the policy loss")
    kl_coef: float = setting(0.05, "coefficient of the per-token KL penalty against the reference (the initial one"
                                   " when adaptive)")
    adaptive_kl: bool = setting(False, "steer kl_coef towards target_kl (Ziegler et al. 2019) instead of keeping it"
                                       " fixed")
    target_kl: float = setting(6.0, "adaptive KL: the summed per-sequence KL to aim for")
    kl_horizon: int = setting(10000, "adaptive KL: the coefficient changes by at most 20 percent times batch_size /"
                                     " kl_horizon per iteration")
    missing_eos_penalty: float | None = setting(-1.0, "the score given to a response that ends without EOS (cut off by"
                                                      " response_length); null keeps the reward model's score")
    response_length: int = setting(48, "maximum new tokens per response")
    temperature: float = setting(0.7, "sampling temperature of rollouts (log-probabilities are taken at the same"
                                      " temperature)")
    whiten_rewards: bool = setting(False, "scale the per-token rewards to unit variance before GAE")
    disable_dropout: bool = setting(True, "set every dropout probability (model config, LoRA) to 0, so that rollout"
                                          " and training log-probabilities agree")
    seed: int = setting(0, "seed for prompt order, sampling and initialisation")
    max_grad_norm: float = setting(1.0, "gradient clipping (global L2 norm)")

    def __post_init__(self) -> None:
        checks = [
            (self.learning_rate >= 0, f"learning_rate must not be negative, not {self.learning_rate}."),
            (self.max_steps >= 1, f"max_steps must be at least 1, not {self.max_steps}."),
            (self.batch_size >= 1, f"batch_size must be at least 1, not {self.batch_size}."),
            (self.mini_batch_size >= 1, f"mini_batch_size must be at least 1, not {self.mini_batch_size}."),
            (self.batch_size % max(self.mini_batch_size, 1) == 0,
             f"mini_batch_size ({self.mini_batch_size}) must divide batch_size ({self.batch_size})."),
            (self.num_ppo_epochs >= 1, f"num_ppo_epochs must be at least 1, not {self.num_ppo_epochs}."),
            (0 <= self.gamma <= 1, f"gamma must be between 0 and 1, not {self.gamma}."),
            (0 <= self.lam <= 1, f"lam must be between 0 and 1, not {self.lam}."),
            (self.cliprange > 0, f"cliprange must be greater than 0, not {self.cliprange}."),
            (self.cliprange_value > 0, f"cliprange_value must be greater than 0, not {self.cliprange_value}."),
            (self.vf_coef >= 0, f"vf_coef must not be negative, not {self.vf_coef}."),
            (self.kl_coef >= 0, f"kl_coef must not be negative, not {self.kl_coef}."),
            (self.target_kl > 0, f"target_kl must be greater than 0, not {self.target_kl}."),
            (self.kl_horizon >= 1, f"kl_horizon must be at least 1, not {self.kl_horizon}."),
            (self.response_length >= 1, f"response_length must be at least 1, not {self.response_length}."),
            (self.temperature > 0, f"temperature must be greater than 0 (PPO samples), not {self.temperature}."),
            (self.max_grad_norm > 0, f"max_grad_norm must be greater than 0, not {self.max_grad_norm}."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# -- the loop ---------------------------------------------------------------------------

def train(inputs: TrainInputs, reward_fn: RewardFn | None = None) -> dict[str, float]:
    """PPO on the prompts of `inputs.data` (column `prompt`: chat messages). The reward is
    the reward model at `inputs.reward_path`, or `reward_fn(prompts, completions) -> [b]`
    when given. Writes the policy to `inputs.out_dir`; returns the last iteration's metrics
    and `reward/mean_first` (the first iteration's mean reward)."""
    config = _config(inputs.config)
    prompts = _prompts(inputs)
    if reward_fn is None and inputs.reward_path is None:
        raise TrainingError("PPO needs a reward model: train one with `rlhf train reward` or pass --reward VERSION.")
    loading.check_adapter(inputs.options)
    decided = common.plan(inputs, "ppo", len(prompts), config.batch_size, "prompts")
    config = dataclasses.replace(config, **decided.settings)
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if loading.on_gpu() else "cpu")
    reporter = inputs.reporter

    policy = PPOPolicy.load(inputs.base_path, inputs.options, config, device)
    scorer = None if reward_fn is not None else load_scorer(Path(inputs.reward_path), device, inputs.data)
    value_model = ValueModel.load(inputs, scorer, policy.tokenizer, config, device)
    trainable = policy.trainable_parameters() + value_model.trainable_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, eps=1e-5, weight_decay=0.0)
    kl_control = (AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon) if config.adaptive_kl
                  else FixedKLController(config.kl_coef))
    batches = _prompt_batches(len(prompts), config.batch_size, config.seed)

    first: dict[str, float] = {}
    metrics: dict[str, float] = {}
    reporter.progress(0, config.max_steps)
    for iteration in range(1, config.max_steps + 1):
        reporter.check_cancelled()
        started = time.monotonic()
        conversations = [prompts[i] for i in next(batches)]

        # 1. rollout: sample responses, then score them with every model, without gradients
        # (matrix products in bf16 where the device has it; logits, values and scores come back fp32)
        with torch.no_grad(), loading.autocast(device):
            rollout = policy.rollout(conversations)
            logprobs = policy.logprobs(rollout, config.mini_batch_size)
            ref_logprobs = policy.logprobs(rollout, config.mini_batch_size, reference=True)
            values = value_model.values(rollout, config.mini_batch_size)
            if reward_fn is not None:
                scores = _call_reward_fn(reward_fn, conversations, rollout.completions).to(device)
            else:
                scores = torch.tensor(scorer.score(conversations, rollout.completions, config.mini_batch_size),
                                      device=device)
        with torch.no_grad():
            mask = rollout.response_mask

            # 2. rewards: KL penalty per token, the (EOS-checked) score at the last real token
            penalised = apply_missing_eos_penalty(scores, rollout.has_eos, config.missing_eos_penalty)
            kl_coef = kl_control.value
            rewards, kl = kl_penalty_rewards(penalised, logprobs, ref_logprobs, kl_coef, mask)
            if config.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False)

            # 3. advantages: GAE on the value model's estimates, whitened over the batch
            advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
            advantages = whiten(advantages, mask)

        rollout_seconds = time.monotonic() - started

        # 4. optimise: several epochs of shuffled minibatches on this batch of rollouts
        stats: dict[str, list[float]] = {key: [] for key in
                                         ("loss/policy", "loss/value", "policy/clipfrac", "val/clipfrac",
                                          "policy/approx_kl", "policy/entropy")}
        policy.model.train()
        value_model.model.train()
        for _epoch in range(config.num_ppo_epochs):
            order = torch.randperm(len(conversations), device=device)
            for start in range(0, len(conversations), config.mini_batch_size):
                rows = order[start:start + config.mini_batch_size]
                part = rollout.select(rows)
                with loading.autocast(device):
                    logits = policy.logits(part)
                    new_values = value_model.forward(part)
                new_logprobs = logprobs_from_logits(logits, part.response_ids)
                pg_loss, pg_clipfrac, approx_kl = policy_loss(
                    new_logprobs, logprobs[rows], advantages[rows], part.response_mask, config.cliprange)
                vf_loss, vf_clipfrac = value_loss(
                    new_values, values[rows], returns[rows], part.response_mask, config.cliprange_value)
                loss = pg_loss + config.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    entropy = masked_mean(entropy_from_logits(logits.detach()), part.response_mask)
                for key, value in (("loss/policy", pg_loss), ("loss/value", vf_loss),
                                   ("policy/clipfrac", pg_clipfrac), ("val/clipfrac", vf_clipfrac),
                                   ("policy/approx_kl", approx_kl), ("policy/entropy", entropy)):
                    stats[key].append(float(value.detach()))
                del logits, new_logprobs, new_values, loss
        policy.model.eval()
        value_model.model.eval()

        # 5. report, and let the adaptive controller see this batch's KL
        kl_per_sequence = kl.sum(dim=1)
        non_score = (-kl_coef * kl).sum(dim=1)
        metrics = {
            "reward/mean": float(scores.mean()),
            "reward/std": float(scores.std()) if len(scores) > 1 else 0.0,
            "objective/scores": float(penalised.mean()),
            "objective/kl": float(kl_per_sequence.mean()),
            "objective/kl_coef": kl_coef,
            "objective/non_score_reward": float(non_score.mean()),
            "objective/rlhf_reward": float((penalised + non_score).mean()),
            **{key: float(np.mean(values_)) for key, values_ in stats.items()},
            "val/mean": float(masked_mean(values, mask)),
            "val/returns": float(masked_mean(returns, mask)),
            "response/length": float(mask.sum(dim=1).float().mean()),
            "response/eos_fraction": float(rollout.has_eos.float().mean()),
            "time/rollout_seconds": rollout_seconds,
            "time/iteration_seconds": time.monotonic() - started,
        }
        kl_control.update(metrics["objective/kl"], len(conversations))
        if iteration == 1:
            first = metrics
        reporter.metrics(iteration, metrics)
        reporter.progress(iteration, config.max_steps)
        log.info("PPO iteration %d/%d: reward %.3f, kl %.3f, length %.1f", iteration, config.max_steps,
                 metrics["reward/mean"], metrics["objective/kl"], metrics["response/length"])

    reporter.check_cancelled()
    policy.save(inputs.out_dir, inputs.base_path, merge=bool(inputs.options.get("merge", False)))
    checked = guard.report(inputs, "ppo", None, prompts[: int(inputs.options.get("guard_prompts", 0))])
    return {**metrics, "reward/mean_first": first["reward/mean"], "objective/kl_first": first["objective/kl"],
            **decided.metrics(), **checked}


# -- the inputs ------------------------------------------------------------------------

def _config(overrides: dict[str, Any]) -> PPOConfig:
    try:
        return PPOConfig(**overrides)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"Invalid ppo setting: {str(error).strip().splitlines()[0]}") from None


def _prompts(inputs: TrainInputs) -> list[list[dict]]:
    """The chat messages of each row (a plain string becomes one user message)."""
    frame = inputs.data
    if "prompt" not in frame.columns:
        raise TrainingError("PPO needs prompts: the training data has no `prompt` column.")
    prompts = []
    for cell in frame["prompt"]:
        if isinstance(cell, str) and not cell.strip():
            continue  # a blank prompt is no prompt
        value = plain(cell)
        if isinstance(value, (str, list)) and value:
            prompts.append(as_messages(value))
    if not prompts:
        raise TrainingError("PPO needs prompts: the selected prompt sets hold none; import some with"
                            " `rlhf prompts import`.")
    return prompts


def _prompt_batches(n_prompts: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Indices of `batch_size` prompts at a time, walking through seeded shuffles of all
    prompts (every prompt once before any twice)."""
    rng = np.random.default_rng(seed)
    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            pending.extend(rng.permutation(n_prompts).tolist())
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _call_reward_fn(reward_fn: RewardFn, conversations: list[list[dict]], completions: list[str]) -> torch.Tensor:
    scores = torch.as_tensor(reward_fn(conversations, completions), dtype=torch.float32).detach().cpu()
    if scores.shape != (len(completions),):
        raise TrainingError(f"The reward function must return one score per completion ({len(completions)}),"
                            f" not a tensor of shape {tuple(scores.shape)}.")
    return scores


# -- rollouts -------------------------------------------------------------------------

@dataclass
class Rollout:
    """One batch of sampled responses, as token ids (b rollouts, P prompt tokens, R response
    tokens). `input_ids` [b, P + R] is prompt then response; `attention_mask` [b, P + R]
    is 1 on prompt tokens (left-padded) and on response tokens up to their EOS."""

    prompt_ids: torch.Tensor      # [b, P]
    prompt_mask: torch.Tensor     # [b, P]
    response_ids: torch.Tensor    # [b, R]
    response_mask: torch.Tensor   # [b, R]
    has_eos: torch.Tensor         # [b] bool
    completions: list[str]        # decoded responses without EOS, as `rlhf.modeling.generate.sample` gives them

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def select(self, rows: torch.Tensor) -> "Rollout":
        picked = rows.tolist()
        return Rollout(self.prompt_ids[rows], self.prompt_mask[rows], self.response_ids[rows],
                       self.response_mask[rows], self.has_eos[rows], [self.completions[i] for i in picked])


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` counts them for left padding."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _chunks(size: int, chunk: int) -> Iterator[torch.Tensor]:
    for start in range(0, size, chunk):
        yield torch.arange(start, min(start + chunk, size))


def disable_dropout(model: nn.Module) -> dict[str, float]:
    """Set every dropout probability to 0: the config's `*dropout*` fields, `nn.Dropout`
    modules (LoRA's included) and float `attention_dropout`/`dropout` attributes that
    attention modules copy from the config. Returns the config's former values."""
    former = {}
    config = getattr(model, "config", None)
    if config is not None:
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, float) and not isinstance(value, bool):
                former[key] = value
                setattr(config, key, 0.0)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for attribute in ("attention_dropout", "dropout"):
            if type(getattr(module, attribute, None)) is float:
                setattr(module, attribute, 0.0)
    return former


class PPOPolicy:
    """The trained causal LM, its frozen reference, and the tokenizer."""

    def __init__(self, model, reference, tokenizer, config: PPOConfig, former_dropout: dict[str, float]):
        self.model, self.reference, self.tokenizer, self.config = model, reference, tokenizer, config
        self.former_dropout = former_dropout
        self.padding_side = tokenizer.padding_side

    @classmethod
    def load(cls, base_path: Path, options: dict[str, Any], config: PPOConfig, device: torch.device) -> "PPOPolicy":
        from peft import get_peft_model

        tokenizer = loading.load_tokenizer(base_path)
        quantized = options.get("adapter") == "qlora"
        model = loading.load_causal_lm(base_path, quantize_4bit=quantized)
        if not quantized:
            model = model.to(device)
        former = disable_dropout(model) if config.disable_dropout else {}
        adapter = loading.peft_config(options, "CAUSAL_LM")
        reference = None
        if adapter is None:  # full fine-tuning (or its top layers): the reference is a frozen copy
            reference = copy.deepcopy(model).eval().requires_grad_(False)
            loading.own_adapter(model, options)
        else:
            model = prefix.enable(get_peft_model(model, adapter))
        if config.disable_dropout:
            disable_dropout(model)
        return cls(model.eval(), reference, tokenizer, config, former)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def prompt_learning(self) -> bool:
        peft_config = getattr(self.model, "active_peft_config", None)
        return bool(peft_config is not None and peft_config.is_prompt_learning)

    @torch.no_grad()
    def rollout(self, conversations: list[list[dict]]) -> Rollout:
        """One response per conversation, sampled at the configured temperature from the
        full distribution (top-p 1, no top-k), as `rlhf.modeling.generate` samples."""
        from rlhf.modeling.generate import generate_tokens
        from rlhf.modeling.models import Policy
        from rlhf.modeling.sampling import SamplingParams

        params = SamplingParams(temperature=self.config.temperature, top_p=1.0,
                                max_new_tokens=self.config.response_length)
        generated = generate_tokens(Policy(self.model, self.tokenizer, "ppo"), conversations, params)
        lengths = generated.response_mask.sum(dim=1) - generated.has_eos.long()  # without the EOS
        completions = [self.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                       for row, n in zip(generated.response_ids, lengths.tolist())]
        return Rollout(generated.prompt_ids, generated.prompt_mask, generated.response_ids,
                       generated.response_mask, generated.has_eos, completions)

    def logits(self, rollout: Rollout, reference: bool = False) -> torch.Tensor:
        """[b, R, V] logits that predict each response token, divided by the temperature."""
        length = rollout.response_ids.shape[1]
        kwargs: dict[str, Any] = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
                                  "use_cache": False, "logits_to_keep": length + 1}
        if not self.prompt_learning:  # PEFT ignores (and warns about) position ids with a soft prompt
            kwargs["position_ids"] = _position_ids(rollout.attention_mask)
        if not reference:
            model, context = self.model, nullcontext()
        elif self.reference is not None:
            model, context = self.reference, nullcontext()
        else:
            model, context = self.model, self.model.disable_adapter()
        with context:
            logits = model(**kwargs).logits[:, -(length + 1):-1]
        return logits.float() / self.config.temperature

    @torch.no_grad()
    def logprobs(self, rollout: Rollout, chunk: int, reference: bool = False) -> torch.Tensor:
        """[b, R] log-probabilities of the response tokens (0 on padding), `chunk` rows at a time."""
        parts = []
        for rows in _chunks(len(rollout.completions), chunk):
            part = rollout.select(rows)
            parts.append(logprobs_from_logits(self.logits(part, reference), part.response_ids))
        return torch.cat(parts) * rollout.response_mask

    def save(self, out_dir: Path, base_path: Path, merge: bool) -> str:
        for key, value in self.former_dropout.items():  # the saved config as it was loaded
            setattr(self._base_config(), key, value)
        self.tokenizer.padding_side = self.padding_side
        return loading.save_model(self.model, self.tokenizer, out_dir, base_path, merge=merge)

    def _base_config(self):
        return self.model.get_base_model().config if hasattr(self.model, "get_base_model") else self.model.config


# -- values and rewards ---------------------------------------------------------------

def _score_head_model(model):
    """The sequence classifier inside a PEFT wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _token_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  positions: slice | None = None) -> torch.Tensor:
    """Scalar-head outputs of a sequence classifier at every token ([b, T] over `positions`):
    the backbone's last hidden state through the `score` head, so that padding (pad = EOS
    in SmolLM2) cannot confuse which token is read."""
    inner = _score_head_model(model)
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=_position_ids(attention_mask), use_cache=False).last_hidden_state
    if positions is not None:
        hidden = hidden[:, positions]
    return inner.score(hidden).squeeze(-1).float()


def load_scorer(path: Path, device: torch.device, data=None) -> "RewardScorer | CombinedScorer":
    """The reward version's scorer (a combination's gate told the prompts' categories)."""
    if not path.is_dir():
        raise TrainingError(f"The reward model directory {path} does not exist.")
    scorer = scoring.load_scorer(path, device)
    if data is not None and "category" in data.columns:
        scorer.flag_prompts(list(data["prompt"]), list(data["category"]))
    return scorer


class ValueModel:
    """V(s_t): a sequence classifier's scalar head applied at every token."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def load(cls, inputs: TrainInputs, scorer: "RewardScorer | None", tokenizer, config: PPOConfig,
             device: torch.device) -> "ValueModel":
        """From the reward model (Huang et al. 2024) when there is one with the policy's
        vocabulary, else from the policy's base with a fresh scalar head. LoRA with the
        job's LoRA options (also for adapter=prompt or qlora), full training for
        adapter=full; the head is always trained."""
        from peft import get_peft_model
        from transformers import AutoModelForSequenceClassification

        if scorer is not None and scorer.tokenizer.get_vocab() == tokenizer.get_vocab():
            model = copy.deepcopy(scorer.model)  # already loaded; the scorer keeps its own weights
        else:
            if scorer is not None:
                log.warning("The reward model's vocabulary differs from the policy's: the value model starts from"
                            " the policy's base instead.")
            root = Path(inputs.base_path)
            while loading.is_adapter(root):
                root = loading.adapter_base(root)
            model = AutoModelForSequenceClassification.from_pretrained(str(root), num_labels=1,
                                                                       dtype=loading.model_dtype())
            with torch.no_grad():  # a fresh head starts at V = 0: first advantages are the returns, not noise
                model.score.weight.zero_()
        model.config.pad_token_id = tokenizer.pad_token_id
        model = model.to(device)
        if config.disable_dropout:
            disable_dropout(model)
        options = dict(inputs.options)
        if options.get("adapter") in ("prompt", "qlora", "prefix", "bottleneck_serial", "bottleneck_parallel"):
            options["adapter"] = "lora"
        adapter = loading.peft_config(options, "SEQ_CLS")
        loading.train_top_layers(model, options)
        if adapter is not None:
            model = get_peft_model(model, adapter)
            if config.disable_dropout:
                disable_dropout(model)
        return cls(model.eval())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def forward(self, rollout: Rollout) -> torch.Tensor:
        """[b, R] values of the states before each response token (the prompt's last token
        for the first), with gradients."""
        length = rollout.response_ids.shape[1]
        total = rollout.input_ids.shape[1]
        return _token_scores(self.model, rollout.input_ids, rollout.attention_mask,
                             positions=slice(total - length - 1, total - 1))

    @torch.no_grad()
    def values(self, rollout: Rollout, chunk: int) -> torch.Tensor:
        parts = [self.forward(rollout.select(rows)) for rows in _chunks(len(rollout.completions), chunk)]
        return torch.cat(parts) * rollout.response_mask
