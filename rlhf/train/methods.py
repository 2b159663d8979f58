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

    @property
    def module(self) -> str:
        return "rlhf.train." + {"rloo": "online", "grpo": "online"}.get(self.name, self.name)


COMMON_OPTIONS = {
    "adapter": Option("lora", "how weights are adapted: LoRA (PEFT), a learned soft prompt, full fine-tuning,"
                      " or QLoRA (4-bit base, CUDA only)", ("lora", "prompt", "full", "qlora")),
    "lora_r": Option(16, "LoRA rank"),
    "lora_alpha": Option(32, "LoRA scaling numerator (alpha / r scales the update)"),
    "lora_dropout": Option(0.0, "dropout on the LoRA path"),
    "lora_target": Option("all-linear", "modules LoRA adapts (PEFT target_modules)"),
    "num_virtual_tokens": Option(8, "soft-prompt length for adapter=prompt"),
    "merge": Option(False, "merge a LoRA result into full weights (for serving elsewhere)"),
    "eval_fraction": Option(0.1, "share of comparisons held out for evaluation (split by comparison)"),
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


def method(name: str) -> Method:
    if name not in METHODS:
        raise SettingsError(f"Unknown method '{name}': choose {', '.join(METHODS)}.")
    return METHODS[name]


def options_of(spec: Method) -> dict[str, Option]:
    return {**COMMON_OPTIONS, **spec.options}


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
        elif key in fields:
            config[key] = _coerce(key, value, fields[key])
        else:
            raise SettingsError(
                f"{name} has no setting '{key}': use a field of {spec.config_class.rpartition('.')[2]}"
                f" (e.g. learning_rate, max_steps) or one of {', '.join(sorted(options))}."
            )
    _check_ranges({**config, **options})
    if options["adapter"] == "qlora":
        from rlhf.train.common import check_adapter  # imports torch: only for QLoRA

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
            "max_completion_length", "margin_scale")


def _check_ranges(values: dict[str, Any]) -> None:
    """Values TRL would accept and then train nothing (or diverge) with."""
    for key in POSITIVE:
        if values.get(key) is not None and values[key] <= 0:
            raise SettingsError(f"{key} must be greater than 0, not {values[key]}.")
    if not 0 <= values.get("eval_fraction", 0) <= 0.5:
        raise SettingsError(f"eval_fraction must be between 0 and 0.5, not {values['eval_fraction']}.")
    if not 0 <= values.get("lora_dropout", 0) < 1:
        raise SettingsError(f"lora_dropout must be in [0, 1), not {values['lora_dropout']}.")


def _buildable(config: dict[str, Any], fields: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The config as the CPU can build it: the job sets precision for its own device."""
    cpu = {"bf16": False, "fp16": False, "use_cpu": True, "output_dir": output_dir,
           "activation_checkpointing": config.get("activation_checkpointing", False)}
    return {**config, **{key: value for key, value in cpu.items() if key in fields}}
