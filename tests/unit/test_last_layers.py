"""adapter=last_layers: a policy job (SFT) and a reward job on the tiny two-layer Llama
change only the top `trainable_layers` blocks, the final norm and the head."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rlhf.errors import TrainingError
from rlhf.modeling import loading
from rlhf.train import common, reward, sft
from rlhf.train.methods import resolve

FAST = {"adapter": "last_layers", "trainable_layers": 1, "max_steps": 1, "learning_rate": 1e-2,
        "per_device_train_batch_size": 2, "max_length": 128, "eval_fraction": 0.0}


def sft_rows() -> pd.DataFrame:
    return pd.DataFrame([{"prompt": [{"role": "user", "content": f"Question {i}?"}],
                          "completion": [{"role": "assistant", "content": f"Answer number {i}."}],
                          "comparison_id": i} for i in range(4)])


def reward_rows() -> pd.DataFrame:
    return pd.DataFrame([{"ranking_id": i, "comparison_id": i, "prompt": [{"role": "user", "content": f"Q {i}?"}],
                          "completions": ["Yes.", "No, never."], "ranking": "B > A", "user": "ann",
                          "model_versions": ["base", "base"]} for i in range(4)])


def changed(base: Path, out: Path) -> set[str]:
    """The names of the weights that differ between the base and the saved model."""
    before, after = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    return {key for key in before if key in after and not torch.equal(before[key], after[key])}


@pytest.mark.parametrize("method,module,rows,extra", [
    ("sft", sft, sft_rows, {"guard_prompts": 0, "guard_pairs": 0}),
    ("reward", reward, reward_rows, {"normalize": False}),
])
def test_only_the_top_blocks_the_norm_and_the_head_change(tiny_model_dir, tmp_path, method, module, rows, extra):
    config, options = resolve(method, {**FAST, **extra})
    out = tmp_path / "model"
    module.train(common.TrainInputs(rows(), tiny_model_dir, out, config, options))

    moved = changed(tiny_model_dir, out)
    assert any(key.startswith("model.layers.1.") for key in moved)            # the top block trained
    assert not any(key.startswith("model.layers.0.") for key in moved)        # the one below stayed
    assert all(key.startswith(("model.layers.1.", "model.norm.", "model.embed_tokens.")) for key in moved), moved


def test_trainable_layers_beyond_the_model_is_refused(tiny_model_dir):
    model = loading.load_causal_lm(tiny_model_dir)
    with pytest.raises(TrainingError, match="trainable_layers must be between 1 and 2"):
        loading.train_top_layers(model, {"adapter": "last_layers", "trainable_layers": 3})
    loading.train_top_layers(model, {"adapter": "last_layers", "trainable_layers": 1})
    trained = {name.split(".")[1] + ("." + name.split(".")[2] if name.startswith("model.layers") else "")
               for name, p in model.named_parameters() if p.requires_grad}
    # tied embeddings: the head is the embedding matrix, so it trains as the head
    assert trained == {"layers.1", "norm", "embed_tokens"}
