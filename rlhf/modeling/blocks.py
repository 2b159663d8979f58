"""Where a model's transformer blocks are: what the top-layers freeze (`loading`) and the
bottleneck adapters (`bottleneck`) both walk, found in one place."""

from __future__ import annotations

import torch

from rlhf.errors import TrainingError


def decoder_blocks(model, adapter: str) -> torch.nn.ModuleList:
    """The transformer blocks of a causal LM or sequence classifier (PEFT- or DDP-wrapped
    too), bottom first; `adapter` names what needs them, for the refusal."""
    inner = getattr(model, "module", model)
    backbone = getattr(inner, inner.base_model_prefix, inner)
    blocks = getattr(backbone, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise TrainingError(f"adapter={adapter} needs a model with decoder layers; {type(inner).__name__} has none.")
    return blocks
