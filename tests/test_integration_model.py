"""Integration tests on the real default model (SmolLM2-135M-Instruct): generation
through the workbench, sensible greedy answers, and the exported
preference file feeding TRL's DPOTrainer and RewardTrainer without any conversion."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from rlhf.generate import SamplingParams, sample
from rlhf.home import BASE_VERSION
from rlhf.models import load_policy
from rlhf.workbench import Workbench

try:  # `python -m pytest` from the repository root puts the root on sys.path
    from tests.conftest import make_home
except ImportError:  # a bare `pytest` puts tests/ on it (rootdir conftest, no __init__.py)
    from conftest import make_home

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _englishish(text: str) -> bool:
    """Mostly letters and spaces, with a few common English words."""
    letters = sum(ch.isascii() and (ch.isalpha() or ch.isspace()) for ch in text)
    words = set(re.findall(r"[a-z']+", text.lower()))
    common = {"the", "a", "an", "to", "and", "of", "is", "you", "your", "i", "it", "in", "for", "can", "be", "that",
              "this", "are", "with", "on", "as", "or", "here", "some", "if", "my", "what", "how"}
    return letters >= 0.7 * len(text) and bool(words & common)


def test_workbench_generates_with_the_real_model(tmp_path, real_model_dir):
    home = make_home(tmp_path / "h", real_model_dir)
    params = SamplingParams(max_new_tokens=32, seed=0)
    with Workbench(home) as wb:
        created = wb.generate(n=2, k=4, params=params)
        assert len(created) == 2
        stored = wb.comparisons()
        assert sorted(stored["id"]) == sorted(created)
        completions = [c for cid in created for c in wb.comparison(cid).completions]
        assert len(completions) == 8
        for cid in created:
            comparison = wb.comparison(cid)
            assert comparison.k == 4
            assert [c["letter"] for c in comparison.completions] == ["A", "B", "C", "D"]
        for completion in completions:
            assert completion["model_version"] == BASE_VERSION
            assert completion["text"].strip(), completion
            assert _englishish(completion["text"]), completion["text"]
            assert 1 <= completion["num_tokens"] <= 32
            assert completion["finish_reason"] in ("eos", "length")
            assert json.loads(completion["sampling"]) == params.as_dict()
        # sampling at temperature 0.8: the four completions of a prompt are not all identical
        for cid in created:
            assert len({c["text"] for c in wb.comparison(cid).completions}) > 1


def test_real_model_answers_a_factual_question(real_model_dir):
    policy = load_policy(real_model_dir)
    [[answer, twin]] = sample(policy, [FRANCE], k=2, params=SamplingParams(temperature=0, max_new_tokens=24))
    assert "Paris" in answer.text, answer
    assert answer == twin
    assert answer.finish_reason == "eos"  # a short answer ends by itself
    assert answer.num_tokens < 24


BATCH_PROMPTS = [
    FRANCE,
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Write a long poem about the sea, the sky and the wind over the hills, please."}],
    [{"role": "user", "content": "Name three colours."}],
]


def test_real_model_batching_keeps_greedy_answers(real_model_dir):
    """Left padding is right: prompts of different lengths batched together get exactly
    what each gets alone."""
    policy = load_policy(real_model_dir)
    params = SamplingParams(temperature=0, max_new_tokens=16)
    alone = sample(policy, BATCH_PROMPTS, k=2, params=params, batch_prompts=1)
    batched = sample(policy, BATCH_PROMPTS, k=2, params=params, batch_prompts=4)
    assert batched == alone
    assert "Paris" in batched[0][0].text


# -- export, then train one step with TRL ------------------------------------------------


@pytest.fixture(scope="module")
def preference_file(tmp_path_factory, real_model_dir):
    """Two comparisons of K=3 from the real model, ranked, exported as TRL preference pairs."""
    root = tmp_path_factory.mktemp("dpo")
    home = make_home(root / "h", real_model_dir)
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


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def test_exported_pairs_train_one_dpo_step(preference_file, real_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = _load_pairs(preference_file)
    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    config = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=1e-4, logging_steps=1, report_to="none", save_strategy="no", bf16=False, fp16=False,
        use_cpu=True, max_length=128, dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=False,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=_lora())
    assert len(trainer.train_dataset) == len(dataset)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_before, "the policy is not a LoRA model"
    trainer.train()
    assert trainer.state.global_step == 1
    assert _finite_losses(trainer), trainer.state.log_history
    # the step moved the adapter (lora_B starts at zero, so any update shows)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n].detach(), before) for n, before in lora_before.items())


def test_exported_pairs_train_one_reward_model_step(preference_file, real_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    dataset = _load_pairs(preference_file)
    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(real_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = RewardConfig(
        output_dir=str(tmp_path / "rm"), max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=1e-4, logging_steps=1, report_to="none", save_strategy="no", bf16=False, fp16=False,
        use_cpu=True, max_length=128, dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=False,
    )
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=_lora())
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
