"""The exported preference file feeds TRL's DPOTrainer and RewardTrainer without any
conversion: one step each on the tiny random Llama (same tokenizer and chat template as
the default model, so the formats are exercised exactly; the weights do not matter)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.modeling.generate import SamplingParams
from rlhf.collect.workbench import Workbench
from helpers import one_step_config, small_lora

try:  # `python -m pytest` from the repository root puts the root on sys.path
    from tests.conftest import make_home
except ImportError:  # a bare `pytest` puts tests/ on it (rootdir conftest, no __init__.py)
    from conftest import make_home


# -- export, then train one step with TRL ------------------------------------------------


@pytest.fixture(scope="module")
def preference_file(tmp_path_factory, tiny_model_dir):
    """Two comparisons of K=3 from the tiny model, ranked, exported as TRL preference pairs."""
    root = tmp_path_factory.mktemp("dpo")
    home = make_home(root / "h", tiny_model_dir)
    with Workbench(home) as wb:
        created = wb.generate(n=2, k=3, params=SamplingParams(max_new_tokens=24, seed=0))
        assert len(created) == 2
        wb.rank(created[0], "A > B > C", user="alice")
        wb.rank(created[1], "C > A = B", user="alice")
        path, rows = wb.export("preference", root / "pairs.jsonl")
    assert rows == 3 + 2  # 3 pairs from a strict order of 3, 2 from 'C > A = B'
    return path


def _load_pairs(path):
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train")
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected", "margin"}
    first = dataset[0]
    assert first["prompt"][-1]["role"] == "user"
    assert first["chosen"] == [{"role": "assistant", "content": first["chosen"][0]["content"]}]
    return dataset


def _finite_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry and math.isfinite(entry["loss"])]


def test_exported_pairs_train_one_dpo_step(preference_file, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = _load_pairs(preference_file)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = one_step_config(DPOConfig, tmp_path / "dpo")
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=small_lora())
    assert len(trainer.train_dataset) == len(dataset)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_before, "the policy is not a LoRA model"
    trainer.train()
    assert trainer.state.global_step == 1
    assert _finite_losses(trainer), trainer.state.log_history
    # the step moved the adapter (lora_B starts at zero, so any update shows)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n].detach(), before) for n, before in lora_before.items())


def test_exported_pairs_train_one_reward_model_step(preference_file, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    dataset = _load_pairs(preference_file)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = one_step_config(RewardConfig, tmp_path / "rm")
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=small_lora())
    # RewardTrainer drops pairs longer than max_length: all five must fit
    assert len(trainer.train_dataset) == len(dataset)
    # the exported margin (rank distance) is kept and goes into the loss: -logsigmoid(r_c - r_r - margin)
    assert "margin" in trainer.train_dataset.column_names
    assert sorted(trainer.train_dataset["margin"]) == sorted(dataset["margin"])
    # the conversational rows went through the chat template
    chosen_text = tokenizer.decode(trainer.train_dataset[0]["chosen_ids"])
    assert "<|im_start|>assistant" in chosen_text and dataset[0]["chosen"][0]["content"].strip()[:20] in chosen_text
    trainer.train()
    assert trainer.state.global_step == 1
    assert _finite_losses(trainer), trainer.state.log_history


# -- the unpaired (KTO) export and the Parquet export, one step each -------------------------


@pytest.fixture(scope="module")
def other_exports(tmp_path_factory, tiny_model_dir):
    """Two comparisons of K=3 from the tiny model, ranked, exported as TRL unpaired (KTO)
    rows in JSONL and as preference pairs in Parquet."""
    root = tmp_path_factory.mktemp("kto-parquet")
    home = make_home(root / "h", tiny_model_dir)
    with Workbench(home) as wb:
        created = wb.generate(n=2, k=3, params=SamplingParams(max_new_tokens=24, seed=1))
        wb.rank(created[0], "A > B > C", user="alice")
        wb.rank(created[1], "C > A = B", user="alice")
        unpaired, unpaired_rows = wb.export("unpaired", root / "unpaired.jsonl")
        parquet, pair_rows = wb.export("preference", root / "pairs.parquet")
    assert pair_rows == 3 + 2
    return {"unpaired": unpaired, "unpaired_rows": unpaired_rows, "parquet": parquet}


def test_exported_unpaired_rows_train_one_kto_step(other_exports, tiny_model_dir, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    dataset = load_dataset("json", data_files=str(other_exports["unpaired"]), split="train")
    assert set(dataset.column_names) == {"prompt", "completion", "label"}
    assert len(dataset) == other_exports["unpaired_rows"]
    # 'A > B > C': A good, C bad; 'C > A = B': C good, A and B bad
    assert sorted(dataset["label"]) == [False, False, False, True, True]
    first = dataset[0]
    assert first["prompt"][-1]["role"] == "user" and first["completion"][0]["role"] == "assistant"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = KTOTrainer(model=model, args=one_step_config(KTOConfig, tmp_path / "kto"), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=small_lora())
    assert len(trainer.train_dataset) == len(dataset)
    trainer.train()
    assert trainer.state.global_step == 1
    assert _finite_losses(trainer), trainer.state.log_history


def test_exported_parquet_pairs_train_one_dpo_step(other_exports, tiny_model_dir, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("parquet", data_files=str(other_exports["parquet"]), split="train")
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected", "margin"}
    first = dataset[0]
    # Parquet structs carry every field of any message: each message must still be just a role and content
    assert all(set(message) == {"role", "content"} for message in first["prompt"] + first["chosen"]), first
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = DPOTrainer(model=model, args=one_step_config(DPOConfig, tmp_path / "dpo"), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=small_lora())
    assert len(trainer.train_dataset) == len(dataset)
    trainer.train()
    assert trainer.state.global_step == 1
    assert _finite_losses(trainer), trainer.state.log_history
