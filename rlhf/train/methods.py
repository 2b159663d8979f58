"""The training methods, what data each takes, their defaults and options, and the
check of a job's settings before it starts (torch-free until a config class is built).

A setting is either a field of the method's config class (TRL's `DPOConfig`, ... or our
`PPOConfig`), under TRL's own name, or a workbench option (adapter, data selection
choices, ...). Defaults here are chosen to finish in minutes on SmolLM2-135M on a CPU; a
job's learning rate and epochs (online: max_steps) are set from its data by
`rlhf.train.schedule` unless the job's settings name them, and the values here are what
that rule gives LoRA on a mid-sized set.
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from rlhf.errors import UserError
from rlhf.preference.pairs import RANKINGS_OBJECTIVE
from rlhf.train.schedule import lora_rate


class SettingsError(UserError):
    """A setting the method does not know, or a value it cannot take."""


@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    choices: tuple = ()


@dataclass(frozen=True)
class Method:
    name: str
    kind: str            # what it makes: "policy" or "reward"
    data: str            # snapshot rows: "rankings", "pairs", "unpaired", "sft" or "prompts"
    config_class: str    # dotted path of the config dataclass
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)   # config fields the workbench sets
    options: dict[str, Option] = field(default_factory=dict)
    needs_reward: bool = False
    min_rows: int = 2
    scheduled: bool = True   # its epochs and learning rate come from rlhf.train.schedule
    adapters: tuple[str, ...] = ()   # the adapters it can train; empty: every one

    @property
    def module(self) -> str:
        return "rlhf.train." + {"rloo": "online", "grpo": "online"}.get(self.name, self.name)


COMMON_OPTIONS = {
    "adapter": Option("lora", "how weights are adapted: LoRA (PEFT), a learned soft prompt, a learned prefix"
                      " (keys and values at every layer), IA3 (learned scales), bottleneck adapters after"
                      " (serial) or beside (parallel) each MLP, full fine-tuning, QLoRA (4-bit base, CUDA"
                      " only), or last_layers (only the top trainable_layers blocks and the head)",
                      ("lora", "prompt", "prefix", "ia3", "bottleneck_serial", "bottleneck_parallel", "full", "qlora",
                       "last_layers")),
    "lora_r": Option(16, "LoRA rank"),
    "lora_alpha": Option(32, "LoRA scaling numerator (alpha / r scales the update)"),
    "lora_dropout": Option(0.0, "dropout on the LoRA path"),
    "lora_target": Option("all-linear", "modules LoRA adapts (PEFT target_modules)"),
    "num_virtual_tokens": Option(8, "soft-prompt or prefix length for adapter=prompt or prefix"),
    "bottleneck_size": Option(64, "bottleneck width for adapter=bottleneck_serial or bottleneck_parallel"),
    "bottleneck_scale": Option(0.0, "scale of a bottleneck adapter's output (0: 1 serial, 4 parallel as in"
                               " He et al. 2022)"),
    "merge": Option(False, "merge a LoRA result into full weights (for serving elsewhere)"),
    "eval_fraction": Option(0.1, "share of comparisons held out for evaluation (split by comparison)"),
    "trainable_layers": Option(2, "for adapter=last_layers: how many of the top transformer blocks train (with the"
                               " final norm and the head; the rest stays frozen)"),
}

# The guardrails every policy job measures at its end (rlhf.train.guard): a few held-out
# prompts and pairs, so that they cost seconds, not minutes.
GUARD_OPTIONS = {
    "guard_prompts": Option(8, "held-out prompts sampled once after training for the KL to the parent and the"
                            " repetition rate (0: skip them)"),
    "guard_max_new_tokens": Option(48, "tokens per guardrail sample"),
    "guard_pairs": Option(64, "held-out pairs for the held-out (implicit reward) accuracy (0: skip it)"),
    "max_kl": Option(20.0, "KL to the parent (nats per completion, sampled) above which the job says it moved"
                     " too far"),
    "max_repetition": Option(0.3, "share of sampled answers repeating themselves (over half their 4-grams"
                             " repeated) above which the job says it moved too far"),
}

_OFFLINE_TRAINING = {"num_train_epochs": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                     "max_length": 512, "warmup_steps": 0, "lr_scheduler_type": "linear", "seed": 0}

METHODS: dict[str, Method] = {
    "reward": Method(
        "reward", "reward", "rankings", "trl.RewardConfig",
        "reward model (scalar head) on the pairs of each ranking; TRL RewardTrainer",
        {**_OFFLINE_TRAINING, "learning_rate": lora_rate("reward"), "per_device_train_batch_size": 8},
        {
            "loss": Option("bradley_terry", "pairwise loss: Bradley-Terry (ties dropped), or a tie-aware"
                           " Rao-Kupper or Davidson loss that learns from tied completions",
                           ("bradley_terry", "rao_kupper", "davidson")),
            "use_margin": Option(False, "subtract the rank distance (times margin_scale) inside the loss, as Llama 2"),
            "margin_scale": Option(1.0, "reward units per rank of distance when use_margin is on"),
            "grouping": Option("pairs", "pairs: each pair is an example; ranking: all pairs of one ranking in one"
                               " batch element weighted 1/C(K,2), as InstructGPT", ("pairs", "ranking")),
            "tie_param": Option(0.0, "tie parameter of the tie-aware losses, Rao-Kupper theta (> 1) or Davidson"
                                " nu (> 0); 0 learns it with the model, starting from theta=3 / nu=2"),
            "normalize": Option(True, "shift rewards to mean 0 on the base policy's completions after training"),
            "objective": Option(RANKINGS_OBJECTIVE, "what the reward model learns: the rankings, or one dimension"
                                " annotators rate 1-5 (helpfulness, harmlessness, honesty): pairs of completions"
                                " rated apart on it, the rating gap as margin (use_margin applies it), as Llama 2's"
                                " helpfulness and safety reward models"),
        },
    ),
    "sft": Method(
        "sft", "policy", "sft", "trl.SFTConfig",
        "supervised fine-tuning on written better answers and/or top-ranked completions; TRL SFTTrainer",
        {**_OFFLINE_TRAINING, "learning_rate": lora_rate("sft")},
        {"sft_source": Option("both", "what to imitate", ("both", "better_answers", "top_ranked"))},
        min_rows=1,
    ),
    "dpo": Method(
        "dpo", "policy", "pairs", "trl.DPOConfig",
        "direct preference optimisation on chosen/rejected pairs; TRL DPOTrainer",
        {**_OFFLINE_TRAINING, "learning_rate": lora_rate("dpo"), "beta": 0.1},
        {"pairs": Option("best_vs_worst", "which pairs of a ranking: top group against bottom group, or every"
                         " pair in different groups", ("best_vs_worst", "all"))},
    ),
    "kto": Method(
        "kto", "policy", "unpaired", "trl.KTOConfig",
        "KTO on single completions: top group desirable, bottom undesirable, plus good/bad marks; TRL KTOTrainer",
        {**_OFFLINE_TRAINING, "learning_rate": lora_rate("kto"), "beta": 0.1, "per_device_train_batch_size": 8},
        {"use_marks": Option(True, "add annotators' explicit good/bad marks")},
        min_rows=4,
    ),
    "ppo": Method(
        "ppo", "policy", "prompts", "rlhf.train.ppo.PPOConfig",
        "PPO against the reward model (the workbench's own, after the TL;DR reproduction)",
        {}, {}, needs_reward=True,
    ),
    "grpo": Method(
        "grpo", "policy", "prompts", "trl.GRPOConfig",
        "GRPO with the reward model as reward function; TRL GRPOTrainer",
        {"learning_rate": lora_rate("grpo"), "max_steps": 20, "per_device_train_batch_size": 4, "num_generations": 4,
         "max_completion_length": 48, "beta": 0.04, "seed": 0, "temperature": 0.8},
        {}, needs_reward=True,
    ),
    "rloo": Method(
        "rloo", "policy", "prompts", "trl.RLOOConfig",
        "REINFORCE leave-one-out with the reward model as reward function; TRL RLOOTrainer",
        {"learning_rate": lora_rate("rloo"), "max_steps": 20, "per_device_train_batch_size": 4, "num_generations": 4,
         "max_completion_length": 48, "beta": 0.04, "seed": 0, "temperature": 0.8},
        {}, needs_reward=True,
    ),
}


# The trainer config fields a job may set: the optimisation, the lengths of what it reads
# and samples, and each method's own maths. Every other field is the workbench's (where
# files go, logging, devices, precision, distribution) or reaches past the job (hubs,
# trackers, other servers, remote code); `resolve` refuses it with the reason.
ALLOWED_FIELDS = frozenset({
    # optimisation
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "optim", "seed", "data_seed", "label_smoothing_factor", "neftune_noise_alpha",
    "eval_strategy", "eval_steps", "activation_checkpointing", "gradient_checkpointing", "dataloader_num_workers",
    "dataloader_drop_last", "torch_empty_cache_steps",
    # data and lengths
    "max_length", "max_completion_length", "truncation_mode", "padding_free", "packing", "packing_strategy",
    "completion_only_loss", "assistant_only_loss", "pad_to_multiple_of", "shuffle_dataset", "dataset_text_field",
    # preference and reward losses
    "beta", "loss_type", "loss_weights", "label_smoothing", "f_divergence_type", "f_alpha_divergence_coef",
    "ld_alpha", "use_weighting", "discopop_tau", "precompute_ref_log_probs", "sync_ref_model",
    "ref_model_mixup_alpha", "ref_model_sync_steps", "desirable_weight", "undesirable_weight",
    "center_rewards_coefficient", "disable_dropout",
    # online methods (GRPO, RLOO) and sampling
    "num_generations", "num_generations_eval", "generation_batch_size", "steps_per_generation", "num_iterations",
    "epsilon", "epsilon_high", "delta", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "scale_rewards", "reward_weights", "mask_truncated_completions", "importance_sampling_level",
    "top_entropy_quantile", "normalize_advantages", "reward_clip_range", "use_bias_correction_kl",
    "off_policy_mask_threshold", "multi_objective_aggregation", "cast_lm_head_to_fp32", "router_aux_loss_coef",
    "use_adaptive_entropy", "entropy_coef", "entropy_coef_delta", "entropy_coef_max", "entropy_coef_min",
    "entropy_target", "sapo_temperature_neg", "sapo_temperature_pos", "vespo_k_neg", "vespo_k_pos",
    "vespo_lambda_neg", "vespo_lambda_pos",
    # PPO (the workbench's own)
    "batch_size", "mini_batch_size", "num_ppo_epochs", "gamma", "lam", "cliprange", "cliprange_value", "vf_coef",
    "kl_coef", "adaptive_kl", "target_kl", "kl_horizon", "missing_eos_penalty", "response_length", "whiten_rewards",
})

# each worker is a process on a machine the server shares with the annotators
MAX_DATALOADER_WORKERS = 2

_OWN_DIRECTORY = "the job writes only in its own directory (jobs/<id>/), where the workbench puts its files"
_NO_UPLOAD = "a job never uploads anything: its model stays in the workbench home"
# Settings refused with a reason: an exact field name, or a prefix ending in "_".
REFUSED = {
    "output_dir": _OWN_DIRECTORY, "logging_dir": _OWN_DIRECTORY,
    "save_": "the workbench saves the trained model once, at the end, in the job's directory",
    "resume_from_checkpoint": "it reads a checkpoint from outside the job's directory",
    "deepspeed": "it reads a config file from outside the job (use RLHF_LAUNCHER with an accelerate config)",
    "fsdp": "distribution is the launcher's (RLHF_LAUNCHER with an accelerate config), not a job's",
    "accelerator_config": "distribution is the launcher's (RLHF_LAUNCHER with an accelerate config), not a job's",
    "parallelism_config": "distribution is the launcher's (RLHF_LAUNCHER with an accelerate config), not a job's",
    "chat_template_path": "it reads a file or a hub model outside the workbench; the base version's template is used",
    "push_to_hub": _NO_UPLOAD, "hub_": _NO_UPLOAD, "log_completions_hub_repo": _NO_UPLOAD, "trackio_": _NO_UPLOAD,
    "report_to": "a job reports its metrics to the workbench only (report_to is always none)",
    "project": "a job reports its metrics to the workbench only (report_to is always none)",
    "run_name": "a job reports its metrics to the workbench only (report_to is always none)",
    "trust_remote_code": "a job never runs code that ships with a model",
    "model_init_kwargs": "the workbench loads the models itself (and never runs code that ships with one)",
    "use_vllm": "a job samples in its own process and connects to no server",
    "vllm_": "a job samples in its own process and connects to no server",
    "logging_": "the workbench logs every step into the job's metrics",
    "bf16": "the workbench chooses the precision for the device the job runs on",
    "fp16": "the workbench chooses the precision for the device the job runs on",
    "tf32": "the workbench chooses the precision for the device the job runs on",
    "use_cpu": "the workbench chooses the device",
}


def refusal(key: str) -> str | None:
    """Why a job may not set `key`, if it is one of the refused settings."""
    if key in REFUSED:
        return REFUSED[key]
    return next((why for prefix, why in REFUSED.items() if prefix.endswith("_") and key.startswith(prefix)), None)


def method(name: str) -> Method:
    if name not in METHODS:
        raise SettingsError(f"Unknown method '{name}': choose {', '.join(METHODS)}.")
    return METHODS[name]


def options_of(spec: Method) -> dict[str, Option]:
    guard = GUARD_OPTIONS if spec.kind == "policy" else {}
    return {**COMMON_OPTIONS, **guard, **spec.options}


def config_class(spec: Method) -> type:
    module, _, name = spec.config_class.rpartition(".")
    return getattr(importlib.import_module(module), name)


def config_fields(spec: Method) -> dict[str, Any]:
    """Every field of the method's config class with its default (workbench defaults win)."""
    fields = {f.name: (f.default if f.default is not dataclasses.MISSING else None)
              for f in dataclasses.fields(config_class(spec)) if f.init}
    return {**fields, **spec.defaults}


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`key=value` strings (from `--set`) to a dict; values read as YAML scalars."""
    parsed = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"'{item}' is not a setting: write key=value, e.g. learning_rate=1e-5.")
        parsed[key.strip()] = scalar(value)
    return parsed


def scalar(text: str) -> Any:
    """A value typed on a command line: a number (1e-5 included, which YAML reads as a
    string), else a YAML scalar (true, null, a list...), else the text itself."""
    text = text.strip()
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of `default` (int is accepted for float)."""
    if isinstance(value, str) and not isinstance(default, str) and default is not None:
        value = scalar(value)
    if default is None or value is None or isinstance(default, (list, dict)):
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{key} must be true or false, not {value!r}.")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    raise SettingsError(f"{key} must be {type(default).__name__}, not {value!r}.")


def resolve(name: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split and check a job's settings: (config overrides incl. workbench defaults,
    options with defaults filled in). Raises SettingsError with one sentence.

    The config class is built once here so that its own checks (TRL's __post_init__)
    refuse a bad value before the job starts."""
    spec = method(name)
    options = {key: option.default for key, option in options_of(spec).items()}
    fields = config_fields(spec)
    config = dict(spec.defaults)
    for key, value in overrides.items():
        if key in options:
            value = _coerce(key, value, options[key])
            choices = options_of(spec)[key].choices
            if choices and value not in choices:
                raise SettingsError(f"{key} must be one of {', '.join(choices)}, not '{value}'.")
            options[key] = value
        elif refusal(key):
            raise SettingsError(f"A job may not set {key}: {refusal(key)}.")
        elif key in fields and key in ALLOWED_FIELDS:
            config[key] = _coerce(key, value, fields[key])
        elif key in fields:
            raise SettingsError(
                f"A job may not set {key}: the workbench sets it (files, logging, devices, precision and"
                f" distribution are its own); a job sets training fields such as learning_rate, max_steps, beta."
            )
        else:
            raise SettingsError(
                f"{name} has no setting '{key}': use a field of {spec.config_class.rpartition('.')[2]}"
                f" (e.g. learning_rate, max_steps) or one of {', '.join(sorted(options))}."
            )
    _check_ranges({**config, **options})
    if spec.adapters and options["adapter"] not in spec.adapters:
        raise SettingsError(f"{name} trains with adapter {', '.join(spec.adapters[:-1])} or {spec.adapters[-1]},"
                            f" not {options['adapter']}.")
    if options["adapter"] == "qlora":
        from rlhf.modeling.loading import check_adapter  # imports torch: only for QLoRA

        try:
            check_adapter(options)
        except UserError as error:
            raise SettingsError(str(error)) from None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            config_class(spec)(**_buildable(config, fields, scratch))
        except (ValueError, TypeError) as error:
            raise SettingsError(f"Invalid {name} setting: {str(error).strip().splitlines()[0]}") from None
    return config, options


POSITIVE = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
            "max_length", "lora_r", "lora_alpha", "num_virtual_tokens", "beta", "num_generations",
            "max_completion_length", "margin_scale", "guard_max_new_tokens", "max_kl", "trainable_layers",
            "iterations", "spin_max_new_tokens")


def _check_ranges(values: dict[str, Any]) -> None:
    """Values TRL would accept and then train nothing (or diverge) with."""
    for key in POSITIVE:
        if values.get(key) is not None and values[key] <= 0:
            raise SettingsError(f"{key} must be greater than 0, not {values[key]}.")
    if not 0 <= values.get("eval_fraction", 0) <= 0.5:
        raise SettingsError(f"eval_fraction must be between 0 and 0.5, not {values['eval_fraction']}.")
    workers = values.get("dataloader_num_workers") or 0
    if not 0 <= workers <= MAX_DATALOADER_WORKERS:
        raise SettingsError(f"dataloader_num_workers must be between 0 and {MAX_DATALOADER_WORKERS}, not {workers}:"
                            " each worker is another process on the machine the server runs on.")
    for key in ("guard_prompts", "guard_pairs"):
        if values.get(key, 0) < 0:
            raise SettingsError(f"{key} must be 0 (skip) or more, not {values[key]}.")
    if not 0 <= values.get("max_repetition", 0) <= 1:
        raise SettingsError(f"max_repetition must be between 0 and 1, not {values['max_repetition']}.")
    if not 0 < values.get("spin_top_p", 1) <= 1 or values.get("spin_temperature", 0) < 0:
        raise SettingsError("spin_top_p must be in (0, 1] and spin_temperature 0 (greedy) or more.")
    if not str(values.get("objective", RANKINGS_OBJECTIVE)).strip():
        raise SettingsError(f"objective must be {RANKINGS_OBJECTIVE} or a rated dimension such as helpfulness,"
                            " not empty.")
    if not 0 <= values.get("lora_dropout", 0) < 1:
        raise SettingsError(f"lora_dropout must be in [0, 1), not {values['lora_dropout']}.")


def _buildable(config: dict[str, Any], fields: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The config as the CPU can build it: the job sets precision for its own device."""
    cpu = {"bf16": False, "fp16": False, "use_cpu": True, "output_dir": output_dir,
           "activation_checkpointing": config.get("activation_checkpointing", False)}
    return {**config, **{key: value for key, value in cpu.items() if key in fields}}


# The feature-based reward model: a method of its own, not an adapter of `reward`, because
# it trains nothing of the network (so no adapter applies) and has its own fit settings
# (full-batch steps on cached features, not TRL's RewardTrainer).
METHODS["reward_head"] = Method(
    "reward_head", "reward", "rankings", "rlhf.train.reward_head.HeadConfig",
    "reward model in seconds: the frozen base embeds each completion once (cached), only a scalar head is fitted"
    " on the pairs",
    {"learning_rate": 0.01, "max_steps": 300, "weight_decay": 0.01},
    {
        **{key: METHODS["reward"].options[key] for key in ("loss", "use_margin", "margin_scale", "tie_param",
                                                            "normalize", "objective")},
        "pooling": Option("last", "the completion's feature: the last token's hidden state (what a reward model's"
                          " head reads) or the mean over its tokens", ("last", "mean")),
    },
    scheduled=False,   # a full-batch fit of fixed max_steps, not epochs of an optimiser over a network
)


# Self-play fine-tuning: DPO each iteration, the human answer against the policy's own, the
# previous iteration as reference (rlhf.train.spin). Its own settings are SpinSettings'.
def _spin_options() -> dict[str, Option]:
    from rlhf.train.spin import SpinSettings  # torch-free at import

    own = {f.name: Option(f.default, f.metadata["help"]) for f in dataclasses.fields(SpinSettings)}
    return {**own, "sft_source": METHODS["sft"].options["sft_source"]}   # the human answers: SFT's demonstrations


METHODS["spin"] = Method(
    "spin", "policy", "sft", "trl.DPOConfig",
    "self-play fine-tuning (SPIN): each iteration prefers the human answer over the policy's own and registers"
    " a version whose parent is the previous iteration; TRL DPOTrainer",
    {**_OFFLINE_TRAINING, "learning_rate": lora_rate("spin"), "beta": 0.1},
    _spin_options(), min_rows=1,
    # each iteration's reference is the previous one's weights: a soft prompt or a 4-bit base has none to merge into
    adapters=("lora", "full", "last_layers"),
)


# Continued pretraining: next-token training on a corpus of raw domain text (rlhf.train.pretrain),
# which the job's request names and its snapshot holds (`Jobs.prepare`), not the rankings.
METHODS["pretrain"] = Method(
    "pretrain", "policy", "corpus", "trl.SFTConfig",
    "continued pretraining on domain text: next-token training on a corpus file (text, JSONL with a text field or"
    " Parquet with a text column) cut into chunks of max_length tokens; reports held-out perplexity before and"
    " after; TRL SFTTrainer",
    {**_OFFLINE_TRAINING, "learning_rate": lora_rate("pretrain"), "max_length": 256},
    {"eval_fraction": Option(0.1, "share of the corpus's chunks held out for the perplexity before and after (chosen"
                             " at random with the seed, by chunk)")},
    min_rows=1,
)
