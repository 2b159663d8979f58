"""Bottleneck adapters beside each transformer block's feed-forward (MLP) sub-layer, written
here because the `adapters` library (1.3.0) needs transformers 4.57 and PEFT has none.

- serial (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP", ICML,
  eq. in sec. 2.1): after the MLP, ``h <- h + W_up f(W_down h)``;
- parallel (He et al., 2022, "Towards a Unified View of Parameter-Efficient Transfer
  Learning", ICLR, table 1 "parallel adapter"): beside the MLP, reading its input x,
  ``h <- MLP(x) + s * W_up f(W_down x)``.

Both sit at the MLP, the placement Hu et al. (2023, "LLM-Adapters", EMNLP, sec. 4.2) found
best for decoder LLMs. W_up starts at zero, so a fresh adapter is the identity: training
starts from the parent exactly. Each block's MLP gets a child module `bottleneck` (its
weights `...mlp.bottleneck.down.weight`, `...up.weight`) and a forward hook that applies it;
the hook is a plain function of the module it runs on, so a deep copy of the model (a
frozen reference) keeps its own adapters.

Saved with a version as `bottleneck.safetensors` (only the adapter's tensors) beside a JSON
of its settings: `adapter_config.json` with `peft_type` "BOTTLENECK" for a policy adapter
over its parent (`rlhf.modeling.loading`), `bottleneck.json` beside full weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.errors import TrainingError
from rlhf.modeling.blocks import decoder_blocks
from rlhf.settings import setting

PEFT_TYPE = "BOTTLENECK"
WEIGHTS_FILE = "bottleneck.safetensors"
SETTINGS_FILE = "bottleneck.json"   # beside full weights (a reward model); an adapter's is adapter_config.json
CHILD = "bottleneck"
PLACEMENTS = ("serial", "parallel")


@dataclass(frozen=True)
class BottleneckSettings:
    placement: str = setting("serial", "serial: after the MLP (Houlsby); parallel: beside it, reading its input"
                                       " (He et al.)")
    size: int = setting(64, "bottleneck width r (down-projection d -> r, up r -> d)")
    scale: float = setting(1.0, "s multiplying the adapter's output (He et al. use 4 for a parallel adapter at the FFN)")

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise TrainingError(f"bottleneck placement must be serial or parallel, not '{self.placement}'.")
        if int(self.size) < 1:
            raise TrainingError(f"bottleneck_size must be at least 1, not {self.size}.")


class Bottleneck(nn.Module):
    """``y = s * W_up relu(W_down x)``: ``[..., d] -> [..., d]`` through width r, W_up zero
    at the start (so y = 0), W_down PyTorch's default (Kaiming-uniform) initialisation."""

    def __init__(self, hidden: int, size: int, scale: float = 1.0, dtype=None, device=None):
        super().__init__()
        self.down = nn.Linear(hidden, size, dtype=dtype, device=device)
        self.up = nn.Linear(size, hidden, dtype=dtype, device=device)
        self.scale = float(scale)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(torch.relu(self.down(x)))


def serial_hook(mlp: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Houlsby: the MLP's output h `[b, T, d]` becomes ``h + adapter(h)``."""
    return output + getattr(mlp, CHILD)(output)


def parallel_hook(mlp: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """He et al.: the MLP's output becomes ``MLP(x) + adapter(x)``, x `[b, T, d]` its input."""
    return output + getattr(mlp, CHILD)(args[0])


HOOKS = {"serial": serial_hook, "parallel": parallel_hook}


def block_mlps(model) -> list[nn.Module]:
    """Each decoder block's feed-forward module, bottom first."""
    mlps = [getattr(block, "mlp", None) for block in decoder_blocks(model, "bottleneck")]
    if any(m is None for m in mlps):
        raise TrainingError("Bottleneck adapters need decoder blocks with an `mlp` module; this model has none.")
    return mlps


def attached(model) -> BottleneckSettings | None:
    """The settings of the bottleneck adapters in `model`, or None when it has none."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_bottleneck_settings", None)


def attach(model, settings: BottleneckSettings) -> list[nn.Module]:
    """Insert one fresh adapter at every block's MLP; returns the adapters (bottom first).
    The model's own weights are left as they are (the caller freezes them)."""
    if attached(model) is not None:
        raise TrainingError("This model already has bottleneck adapters; train from its parent or add LoRA instead.")
    inner = getattr(model, "module", model)
    hidden = int(inner.config.hidden_size)
    weight = next(inner.parameters())
    adapters = []
    for mlp in block_mlps(model):
        adapter = Bottleneck(hidden, int(settings.size), settings.scale, dtype=weight.dtype, device=weight.device)
        mlp.add_module(CHILD, adapter)
        mlp.register_forward_hook(HOOKS[settings.placement])
        adapters.append(adapter)
    inner._bottleneck_settings = settings
    return adapters


def train_only_adapters(model, settings: BottleneckSettings) -> None:
    """`attach`, then freeze everything but the adapters (and a classifier's `score` head,
    which a reward or value model needs trained beside them)."""
    model.requires_grad_(False)
    for adapter in attach(model, settings):
        adapter.requires_grad_(True)
    score = getattr(getattr(model, "module", model), "score", None)
    if score is not None:
        score.requires_grad_(True)


def is_adapter_key(name: str) -> bool:
    return f".{CHILD}." in name


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The adapters' tensors by state-dict name (`model.layers.0.mlp.bottleneck.up.weight`)."""
    inner = getattr(model, "module", model)
    return {k: v.detach().contiguous().cpu() for k, v in inner.state_dict().items() if is_adapter_key(k)}


def without_adapters(model) -> dict[str, torch.Tensor]:
    """The model's state dict without the adapters' tensors (its full weights as saved)."""
    inner = getattr(model, "module", model)
    return {k: v for k, v in inner.state_dict().items() if not is_adapter_key(k)}


def save(model, out_dir: Path, config_name: str, extra: dict[str, Any] | None = None) -> None:
    """Write the adapters' tensors and `{peft_type, placement, size, scale, **extra}` as
    `config_name` in `out_dir`."""
    from safetensors.torch import save_file

    settings = attached(model)
    if settings is None:
        raise TrainingError("This model has no bottleneck adapters to save.")
    save_file(adapter_state(model), str(Path(out_dir) / WEIGHTS_FILE))
    (Path(out_dir) / config_name).write_text(json.dumps({"peft_type": PEFT_TYPE, **asdict(settings), **(extra or {})},
                                                        indent=2))


def save_full(model, out_dir: Path) -> None:
    """The model's full weights without the adapters (`save_pretrained`), the adapters
    and their `bottleneck.json` beside them."""
    model.save_pretrained(str(out_dir), state_dict=without_adapters(model), safe_serialization=True)
    save(model, out_dir, SETTINGS_FILE)


def settings_from(config: dict[str, Any]) -> BottleneckSettings:
    return BottleneckSettings(placement=config["placement"], size=int(config["size"]), scale=float(config["scale"]))


def load_into(model, directory: Path, config_name: str = SETTINGS_FILE):
    """Attach and fill the adapters saved in `directory` (nothing when it has none); the
    model in eval mode stays as it was otherwise. Returns `model`."""
    from safetensors.torch import load_file

    config_file = Path(directory) / config_name
    if not config_file.is_file():
        return model
    attach(model, settings_from(json.loads(config_file.read_text())))
    saved = load_file(str(Path(directory) / WEIGHTS_FILE))
    inner = getattr(model, "module", model)
    missing = set(adapter_state(model)) - set(saved)
    if missing:
        raise TrainingError(f"{Path(directory).name}: the saved bottleneck adapters lack {sorted(missing)[0]}.")
    inner.load_state_dict(saved, strict=False)
    return model
