"""The PEFT family beyond LoRA on the tiny random Llama: prefix tuning and IA3 (PEFT), and
the workbench's own bottleneck adapters (serial and parallel). A fresh bottleneck adapter
is the identity; an adapter moved from its initialisation changes what is scored and what
is generated (a prefix too, which PEFT's generate drops under transformers 5); saving and
loading a version gives the same log-probabilities; every such adapter trains and saves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf.errors import TrainingError
from rlhf.modeling import bottleneck, loading, prefix
from rlhf.modeling.logprobs import completion_logprobs
from rlhf.train import common, dpo, reward
from rlhf.train.methods import COMMON_OPTIONS, resolve

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to three, slowly."}]]
ANSWERS = [[{"role": "assistant", "content": "Blue."}], [{"role": "assistant", "content": "One, two, three."}]]
NEW = ("prefix", "ia3", "bottleneck_serial", "bottleneck_parallel")


def adapted(tiny_model_dir: Path, adapter: str):
    """The tiny causal LM with `adapter` as a job would prepare it (PEFT or the workbench's own)."""
    from peft import get_peft_model

    options = {"adapter": adapter, "num_virtual_tokens": 3, "bottleneck_size": 4}
    model = loading.load_causal_lm(tiny_model_dir)
    config = loading.peft_config(options, "CAUSAL_LM")
    if config is None:
        loading.own_adapter(model, options)
        return model
    return prefix.enable(get_peft_model(model, config))


def nudge(model, seed: int = 0) -> None:
    """Move every trainable weight away from its initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)


def logprobs(model, tokenizer):
    return completion_logprobs(model, tokenizer, PROMPTS, ANSWERS)


def test_the_train_tab_lists_every_adapter():
    assert COMMON_OPTIONS["adapter"].choices == loading.ADAPTERS
    assert set(NEW) <= set(loading.ADAPTERS)


def test_a_bottleneck_computes_s_up_relu_down():
    layer = bottleneck.Bottleneck(hidden=2, size=1, scale=2.0)
    assert torch.equal(layer(torch.tensor([[3.0, -1.0]])), torch.zeros(1, 2))   # W_up starts at zero
    with torch.no_grad():
        layer.down.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.down.bias.fill_(0.5)
        layer.up.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        layer.up.bias.copy_(torch.tensor([0.0, 1.0]))
    # down: 3 - 2 + 0.5 = 1.5 -> relu 1.5 -> up: (1.5, -1.5 + 1) -> times 2
    assert torch.allclose(layer(torch.tensor([[3.0, -1.0]])), torch.tensor([[3.0, -1.0]]))
    # a negative pre-activation is cut: down = -3 + 0.5 -> 0 -> up gives the bias alone
    assert torch.allclose(layer(torch.tensor([[-3.0, 0.0]])), torch.tensor([[0.0, 2.0]]))


@pytest.mark.parametrize("adapter", ["bottleneck_serial", "bottleneck_parallel"])
def test_a_fresh_bottleneck_adapter_is_the_identity_and_only_it_trains(tiny_model_dir, adapter):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    before = logprobs(loading.load_causal_lm(tiny_model_dir), tokenizer)
    model = adapted(tiny_model_dir, adapter)
    assert (logprobs(model, tokenizer) == before).all()
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".mlp.bottleneck." in name for name in trained)
    assert len(trained) == 2 * 4   # two blocks, down and up, weight and bias


@pytest.mark.parametrize("adapter", NEW)
def test_a_moved_adapter_changes_the_scores_and_saved_and_loaded_scores_the_same(tiny_model_dir, tmp_path, adapter):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    before = logprobs(loading.load_causal_lm(tiny_model_dir), tokenizer)
    model = adapted(tiny_model_dir, adapter)
    nudge(model)
    moved = logprobs(model, tokenizer)
    assert abs(moved - before).max() > 1e-3
    assert loading.save_model(model, tokenizer, tmp_path / "v", tiny_model_dir, merge=False) == "adapter"
    assert loading.is_adapter(tmp_path / "v") and loading.adapter_base(tmp_path / "v") == tiny_model_dir.resolve()
    loaded = loading.load_adapted_policy(tmp_path / "v")
    assert logprobs(loaded, tokenizer) == pytest.approx(moved, abs=1e-4)


@pytest.mark.parametrize("adapter", ["prompt", *NEW])
def test_a_batch_of_prompts_of_different_lengths_scores_as_each_alone(tiny_model_dir, adapter):
    """PEFT ignores position ids for a soft prompt or a prefix, so a left-padded row would be
    read at shifted positions: batched, the short prompt's answer must score as it does alone."""
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    model = adapted(tiny_model_dir, adapter)
    nudge(model)
    together = completion_logprobs(model, tokenizer, PROMPTS, ANSWERS, batch_size=8)
    alone = [completion_logprobs(model, tokenizer, [p], [a], batch_size=1)[0] for p, a in zip(PROMPTS, ANSWERS)]
    assert together == pytest.approx(alone, abs=1e-4)


@pytest.mark.parametrize("adapter", NEW)
def test_a_moved_adapter_changes_what_is_generated(tiny_model_dir, adapter):
    """The first generated token's scores are the forward pass's last logits: for a prefix
    too (PEFT's own generate samples from the parent under transformers 5), two samples
    per prompt and left padding included."""
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    tokenizer.padding_side = "left"
    batch = tokenizer(["Hello there, how are", "Hi"], return_tensors="pt", padding=True)
    base = loading.load_causal_lm(tiny_model_dir).eval()
    model = adapted(tiny_model_dir, adapter).eval()
    nudge(model)
    out = model.generate(**batch, max_new_tokens=2, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                         num_return_sequences=2,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        assert batch.attention_mask[0].all()   # the longer prompt: no padding in its row
        forward = model(input_ids=batch.input_ids[:1], attention_mask=batch.attention_mask[:1]).logits[0, -1]
        parent = base(**batch).logits[0, -1]
    first = out.scores[0]
    assert first.shape[0] == 4 and torch.allclose(first[0], first[1])
    assert torch.allclose(first[0], forward, atol=1e-4)
    assert (first[0] - parent).abs().max() > 1e-3


def test_a_prefix_or_bottleneck_cannot_be_merged_and_a_bad_size_is_refused():
    for adapter, what in (("prefix", "A prefix"), ("bottleneck_serial", "A bottleneck adapter")):
        with pytest.raises(TrainingError, match=f"{what} cannot be merged into the weights: use merge=false with"
                                                f" adapter={adapter}"):
            loading.check_adapter({"adapter": adapter, "merge": True})
    with pytest.raises(TrainingError, match="bottleneck_size must be at least 1"):
        loading.check_adapter({"adapter": "bottleneck_parallel", "bottleneck_size": 0})
    with pytest.raises(TrainingError, match="soft prompt or prefix"):
        reward._check_options({"adapter": "prefix"})


def test_an_ia3_version_merges_and_a_parallel_bottleneck_takes_he_et_al_scale():
    assert loading.bottleneck_settings({"adapter": "bottleneck_parallel"}).scale == 4.0
    assert loading.bottleneck_settings({"adapter": "bottleneck_serial"}).scale == 1.0
    assert loading.check_adapter({"adapter": "ia3", "merge": True}) is None


FAST = {"max_steps": 1, "learning_rate": 1e-2, "per_device_train_batch_size": 2, "max_length": 128,
        "eval_fraction": 0.0, "num_virtual_tokens": 3, "bottleneck_size": 4}


def pair_rows() -> pd.DataFrame:
    return pd.DataFrame([{"prompt": PROMPTS[i % 2], "chosen": ANSWERS[i % 2],
                          "rejected": [{"role": "assistant", "content": f"No {i}."}], "comparison_id": i}
                         for i in range(4)])


def reward_rows() -> pd.DataFrame:
    return pd.DataFrame([{"ranking_id": i, "comparison_id": i, "prompt": PROMPTS[i % 2],
                          "completions": ["Yes.", "No, never."], "ranking": "B > A", "user": "ann",
                          "model_versions": ["base", "base"]} for i in range(4)])


@pytest.mark.parametrize("adapter", NEW)
def test_dpo_trains_and_saves_each_new_adapter(tiny_model_dir, tmp_path, adapter):
    config, options = resolve("dpo", {**FAST, "adapter": adapter, "guard_prompts": 0, "guard_pairs": 0})
    out = tmp_path / "model"
    dpo.train(common.TrainInputs(pair_rows(), tiny_model_dir, out, config, options))
    saved = json.loads((out / loading.ADAPTER_CONFIG).read_text())
    assert saved["peft_type"] == {"prefix": "PREFIX_TUNING", "ia3": "IA3"}.get(adapter, "BOTTLENECK")
    tokenizer = loading.load_tokenizer(out)
    after = logprobs(loading.load_adapted_policy(out), tokenizer)
    assert abs(after - logprobs(loading.load_causal_lm(tiny_model_dir), tokenizer)).max() > 1e-4


@pytest.mark.parametrize("adapter", ["ia3", "bottleneck_parallel"])
def test_a_reward_model_trains_with_ia3_or_bottleneck_and_scores_the_same_reloaded(tiny_model_dir, tmp_path, adapter):
    from transformers import AutoModelForSequenceClassification

    from rlhf.modeling.scoring import score_ids

    config, options = resolve("reward", {**FAST, "adapter": adapter, "normalize": False})
    out = tmp_path / "reward"
    reward.train(common.TrainInputs(reward_rows(), tiny_model_dir, out, config, options))
    assert not loading.is_adapter(out)
    assert (out / bottleneck.SETTINGS_FILE).is_file() == adapter.startswith("bottleneck")
    model = loading.load_reward_model(out)
    tokenizer = loading.load_tokenizer(out)
    ids = [tokenizer("Yes.")["input_ids"], tokenizer("No, never.")["input_ids"]]
    if adapter.startswith("bottleneck"):   # the trained adapters are loaded, and they matter
        assert bottleneck.attached(model) is not None
        without = AutoModelForSequenceClassification.from_pretrained(str(out), num_labels=1)
        assert score_ids(model, ids, tokenizer.pad_token_id, 2) != pytest.approx(
            score_ids(without, ids, tokenizer.pad_token_id, 2), abs=1e-6)
    else:                                  # IA3 merged into full weights
        assert bottleneck.attached(model) is None and (out / "model.safetensors").is_file()


def prompt_rows() -> pd.DataFrame:
    return pd.DataFrame({"prompt": [PROMPTS[i % 2] for i in range(4)], "prompt_id": range(4)})


def unpaired_rows() -> pd.DataFrame:
    return pd.DataFrame([{"prompt": PROMPTS[i % 2], "completion": ANSWERS[i % 2] if i < 2 else
                          [{"role": "assistant", "content": "No."}], "label": i < 2, "comparison_id": i}
                         for i in range(4)])


def sft_rows() -> pd.DataFrame:
    return pd.DataFrame([{"prompt": PROMPTS[i % 2], "completion": ANSWERS[i % 2], "comparison_id": i}
                         for i in range(4)])


def words(prompts, completions, **columns) -> list[float]:
    return [float(len(str(c).split())) for c in completions]


GUARD = {"guard_prompts": 2, "guard_max_new_tokens": 4, "guard_pairs": 0}


@pytest.mark.parametrize("method,adapter", [("kto", "ia3"), ("sft", "bottleneck_serial"), ("grpo", "prefix")])
def test_kto_sft_and_grpo_train_and_save_the_new_adapters(tiny_model_dir, tmp_path, one_thread, method, adapter):
    """GRPO samples its rollouts with `generate` (a prefix's through `rlhf.modeling.prefix`),
    and every job's guardrails sample the saved version."""
    from rlhf.train import kto, online, sft

    fast = {**FAST, **GUARD, "adapter": adapter}
    if method == "grpo":
        fast = {**fast, "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 4,
                "max_completion_length": 4}
        fast.pop("max_length")
        fast.pop("eval_fraction")
    config, options = resolve(method, fast)
    inputs = common.TrainInputs({"kto": unpaired_rows, "sft": sft_rows, "grpo": prompt_rows}[method](),
                                tiny_model_dir, tmp_path / "model", config, options)
    metrics = online.train(inputs, "grpo", reward_fn=words) if method == "grpo" else \
        {"kto": kto, "sft": sft}[method].train(inputs)
    assert metrics["train/steps"] == 1
    assert loading.is_adapter(tmp_path / "model")
    loading.load_adapted_policy(tmp_path / "model")


@pytest.mark.parametrize("adapter", ["prefix", "bottleneck_parallel"])
def test_ppo_trains_a_prefix_or_bottleneck_policy_with_a_lora_value_model(tiny_model_dir, tmp_path, one_thread,
                                                                          adapter):
    from rlhf.train.common import Reporter
    from rlhf.train.ppo import train as ppo_train

    reporter = Reporter()
    config = {"batch_size": 4, "mini_batch_size": 2, "num_ppo_epochs": 1, "response_length": 4,
              "learning_rate": 1e-3, "max_steps": 1}
    options = {"adapter": adapter, "num_virtual_tokens": 3, "bottleneck_size": 4}
    ppo_train(common.TrainInputs(prompt_rows(), tiny_model_dir, tmp_path / "out", config, options,
                                 reporter=reporter), reward_fn=lambda prompts, completions: torch.tensor(
                                     [float(len(c.split())) for c in completions]))
    saved = json.loads((tmp_path / "out" / loading.ADAPTER_CONFIG).read_text())
    assert saved["peft_type"] == ("PREFIX_TUNING" if adapter == "prefix" else "BOTTLENECK")
    # a fresh bottleneck is the parent, and the reference is its frozen copy without the adapters
    if adapter.startswith("bottleneck"):
        assert reporter.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)


def test_a_reward_model_on_a_bottleneck_policy_keeps_its_adapters(tiny_model_dir, tmp_path):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    policy = adapted(tiny_model_dir, "bottleneck_serial")
    nudge(policy)
    loading.save_model(policy, tokenizer, tmp_path / "policy", tiny_model_dir, merge=False)
    classifier = reward.load_classifier(tmp_path / "policy", scratch_near=tmp_path)
    inner = classifier.model.layers[0].mlp.bottleneck
    assert torch.equal(inner.up.weight, policy.model.layers[0].mlp.bottleneck.up.weight)
