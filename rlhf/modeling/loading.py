"""Loading and saving models: precision, tokenizers, causal LMs (4-bit for QLoRA), parents
that are themselves adapters, reward models, the adapters (PEFT's LoRA, QLoRA, prompt
tuning, prefix tuning and IA3; the workbench's own bottleneck adapters and top layers; full
fine-tuning), and saving a trained model (merged or as an adapter).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf.errors import TrainingError
from rlhf.modeling import bottleneck, hard_prompt, precision, prefix
from rlhf.modeling.blocks import decoder_blocks

ADAPTER_CONFIG = "adapter_config.json"
REWARD_FILE = "reward.json"   # a reward model's offset and how it was trained (rlhf.train.reward, reward_head)


# PEFT reads transformers 5's deprecated alias whenever it wraps a model; the warning is
# PEFT's to fix and says nothing to our users.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def on_gpu() -> bool:
    return torch.cuda.is_available()


def precision_args() -> dict[str, Any]:
    """Explicit precision for TRL configs (which default to bf16 where they can): bf16
    mixed precision where the device multiplies bf16 natively (a GPU that supports it, a
    CPU with AMX-BF16 or AVX512-BF16: `precision.current`, so RLHF_PRECISION overrides it),
    fp32 elsewhere; the CPU when there is no GPU. On the CPU the weights and the optimiser
    stay fp32 (`model_dtype`) and autocast runs the matrix products in bf16."""
    chosen = precision.current("cuda" if on_gpu() else "cpu")
    return {"bf16": chosen.dtype == "bfloat16", "fp16": False, "use_cpu": not on_gpu()}


def autocast(device: torch.device):
    """bf16 autocast where `precision_args` trains in bf16, a no-op elsewhere: for the loop
    no Trainer wraps (PPO). Outputs the loop reads as figures must be cast to fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_args()["bf16"])


def model_dtype() -> torch.dtype:
    return torch.bfloat16 if on_gpu() and torch.cuda.is_bf16_supported() else torch.float32


def is_adapter(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: Path) -> Path:
    """The directory an adapter was trained on (written by `save_model`)."""
    return Path(json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    path = Path(path)
    while not (path / "tokenizer_config.json").is_file() and (is_adapter(path) or hard_prompt.is_prompt_version(path)):
        path = hard_prompt.read(path).parent if hard_prompt.is_prompt_version(path) else adapter_base(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path, quantize_4bit: bool = False) -> PreTrainedModel:
    """A causal LM from a full-weights directory, or from a LoRA adapter directory (its
    base loaded the same way, recursively, and the adapter merged in)."""
    path = Path(path)
    if hard_prompt.is_prompt_version(path):   # refused before a job is queued (rlhf.jobs.service)
        raise TrainingError(hard_prompt.training_refusal(path.name, hard_prompt.read(path).parent.name))
    if is_adapter(path):
        from peft import PeftModel

        peft_type = json.loads((path / ADAPTER_CONFIG).read_text()).get("peft_type")
        if peft_type == bottleneck.PEFT_TYPE:
            return bottleneck.load_into(load_causal_lm(adapter_base(path)), path, ADAPTER_CONFIG)
        if peft_type not in MERGEABLE:
            raise TrainingError(
                f"{path.name} is a prompt-tuned version; train from its parent, or from a LoRA, IA3, bottleneck"
                " or full version."
            )
        base = load_causal_lm(adapter_base(path))
        # PEFT loads an adapter for inference and freezes the weights; merged, the parent is
        # a plain model again, trainable like one loaded from full weights
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload().requires_grad_(True)
    kwargs: dict[str, Any] = {"dtype": model_dtype()}
    if quantize_4bit:
        kwargs["quantization_config"] = bnb_4bit_config()
    return bottleneck.load_into(AutoModelForCausalLM.from_pretrained(str(path), **kwargs), path)


def load_adapted_policy(path: Path) -> PreTrainedModel:
    """A policy version for sampling: LoRA or IA3 merged into its base, bottleneck adapters
    inserted into it, a soft prompt or prefix kept as a PEFT model (neither can be merged;
    a prefix generates through `rlhf.modeling.prefix`)."""
    from peft import PeftModel

    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") in (*MERGEABLE, bottleneck.PEFT_TYPE):
        return load_causal_lm(path)
    return prefix.enable(PeftModel.from_pretrained(load_causal_lm(adapter_base(path)), str(path)))


def read_reward_info(path: Path) -> dict[str, Any]:
    """`reward.json` of a reward model directory ({} when there is none)."""
    file = Path(path) / REWARD_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def load_reward_model(path: Path) -> PreTrainedModel:
    """A scalar-head sequence classifier saved by a reward trainer (full weights, or the
    base's weights by hard link beside a head file: `rlhf.train.reward_head`). A head
    fitted on mean-pooled features (`pooling` "mean" in reward.json) gets its pooling."""
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=model_dtype())
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    bottleneck.load_into(model, path)
    if read_reward_info(path).get("pooling") == "mean":
        model.score.register_forward_hook(running_mean)
    return model


def running_mean(module, args, scores: torch.Tensor) -> torch.Tensor:
    """Per-token scores `[batch, tokens, 1]` replaced by their running mean along the
    sequence. A linear head on the mean of the hidden states is the mean of the per-token
    scores, and the classifier reads the last non-pad token of a right-padded batch (as
    `score_ids` and TRL's reward functions pad), where the running mean is that mean: a
    mean-pooled head scores through the same classifier as every other reward model."""
    counts = torch.arange(1, scores.shape[-2] + 1, device=scores.device, dtype=scores.dtype)
    return scores.cumsum(dim=-2) / counts.unsqueeze(-1)


ADAPTERS = ("lora", "prompt", "prefix", "ia3", "bottleneck_serial", "bottleneck_parallel", "full", "qlora",
            "last_layers")
PROMPT_LEARNING = ("prompt", "prefix")   # virtual tokens: nothing to merge into the weights
UNMERGEABLE = (*PROMPT_LEARNING, "bottleneck_serial", "bottleneck_parallel")
MERGEABLE = ("LORA", "IA3")              # PEFT types `merge_and_unload` folds into the weights


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
    if options.get("merge") and adapter in UNMERGEABLE:
        what = {"prompt": "A soft prompt", "prefix": "A prefix"}.get(adapter, "A bottleneck adapter")
        raise TrainingError(f"{what} cannot be merged into the weights: use merge=false with adapter={adapter}.")
    if adapter.startswith("bottleneck_"):
        bottleneck_settings(options)   # refuses a bad size before any model is loaded


def bottleneck_settings(options: dict[str, Any]) -> bottleneck.BottleneckSettings:
    """The bottleneck settings of `adapter=bottleneck_serial|bottleneck_parallel`."""
    placement = str(options.get("adapter", "")).removeprefix("bottleneck_")
    default_scale = 4.0 if placement == "parallel" else 1.0   # He et al. 2022, sec. 4.2
    return bottleneck.BottleneckSettings(placement=placement, size=int(options.get("bottleneck_size", 64)),
                                         scale=float(options.get("bottleneck_scale") or default_scale))


def peft_config(options: dict[str, Any], task_type: str):
    """The PEFT config for `options["adapter"]`, or None for full fine-tuning.

    task_type: "CAUSAL_LM" for policies, "SEQ_CLS" for reward/value models (the scalar
    head is then trained in full beside the adapter)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit

    check_adapter(options)
    adapter = options.get("adapter", "lora")
    if adapter in ("full", "last_layers") or adapter.startswith("bottleneck_"):   # `own_adapter` prepares them
        return None
    virtual = int(options.get("num_virtual_tokens", 8))
    if adapter == "prompt":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=virtual,
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    if adapter == "prefix":   # Li and Liang 2021: learned keys and values at every layer, from zero (random
        # ones start the policy far from its parent; zero keys and values only dilute attention a little)
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=virtual, init_weights="zero")
    if adapter == "ia3":      # Liu et al. 2022 (T-Few): learned scales of keys, values and the MLP
        return IA3Config(task_type=task_type)
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
        if merge and config.peft_type.value in MERGEABLE:
            model = model.merge_and_unload()
        elif merge:
            raise TrainingError("Only a LoRA or IA3 adapter can be merged into full weights.")
        else:
            config.base_model_name_or_path = str(Path(base_path).resolve())
            kind = "adapter"
    if bottleneck.attached(model) is not None:
        return _save_bottleneck(model, tokenizer, out_dir, base_path, merge)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return kind


def _save_bottleneck(model, tokenizer, out_dir: Path, base_path: Path, full: bool) -> str:
    """A model with bottleneck adapters: the adapters alone over `base_path` (a policy
    version), or with `full` its weights without them and the adapters beside (a reward
    model, saved in full)."""
    if full:
        bottleneck.save_full(model, out_dir)
    else:
        bottleneck.save(model, out_dir, ADAPTER_CONFIG, {"base_model_name_or_path": str(Path(base_path).resolve())})
    tokenizer.save_pretrained(str(out_dir))
    return "full" if full else "adapter"


def own_adapter(model, options: dict[str, Any]) -> None:
    """Prepare the adapters the workbench does itself, not through PEFT: the top layers
    (`train_top_layers`) or bottleneck adapters (`rlhf.modeling.bottleneck`). Others: nothing."""
    if str(options.get("adapter", "")).startswith("bottleneck_"):
        bottleneck.train_only_adapters(model, bottleneck_settings(options))
    train_top_layers(model, options)


def train_top_layers(model, options: dict[str, Any]) -> None:
    """For `adapter=last_layers`: freeze every weight but the top `trainable_layers`
    transformer blocks, the final norm that follows them and the head (a classifier's
    `score`, a causal LM's output embeddings, which with tied embeddings are the input
    embeddings too). Other adapters: nothing."""
    if options.get("adapter") != "last_layers":
        return
    blocks = decoder_blocks(model, "last_layers")
    count = int(options.get("trainable_layers", 2))
    if not 1 <= count <= len(blocks):
        raise TrainingError(f"trainable_layers must be between 1 and {len(blocks)} (the model's layers), not {count}.")
    inner = getattr(model, "module", model)
    backbone = getattr(inner, inner.base_model_prefix, inner)
    model.requires_grad_(False)
    trained = [*blocks[len(blocks) - count:], getattr(backbone, "norm", None), getattr(inner, "score", None),
               inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None]
    for module in trained:
        if module is not None:
            module.requires_grad_(True)
