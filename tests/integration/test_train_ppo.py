"""PPO (rlhf.train.ppo): its settings, the loop on the tiny random Llama (saving, reporting,
cancelling, refusing), a reward-model run on a tiny random scorer, and one integration
test on the real SmolLM2 where a simple reward must rise within a few iterations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf.train.common import Cancelled, Reporter, TrainInputs
from rlhf.errors import TrainingError
from rlhf.modeling.scoring import RewardScorer
from rlhf.train.ppo import PPOConfig, ValueModel, train
from helpers import save_reward_model

# every test here with one torch thread (see the fixture)
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Which animal barks?"]
METRICS = ["reward/mean", "objective/kl", "objective/kl_coef", "loss/policy", "loss/value", "policy/clipfrac",
           "val/clipfrac", "policy/approx_kl", "response/length", "response/eos_fraction"]
# small enough for a blink on the tiny model: 4 rollouts of 4 tokens, 2 minibatches, 2 epochs
TINY = {"batch_size": 4, "mini_batch_size": 2, "num_ppo_epochs": 2, "response_length": 4, "learning_rate": 1e-3}


def prompt_frame(system: str | None = None) -> pd.DataFrame:
    head = [{"role": "system", "content": system}] if system else []
    return pd.DataFrame({"prompt": [head + [{"role": "user", "content": q}] for q in PROMPTS]})


def inputs_for(model_dir: Path, out_dir: Path, config: dict, reporter: Reporter | None = None, **extra) -> TrainInputs:
    return TrainInputs(data=extra.pop("data", prompt_frame()), base_path=model_dir, out_dir=out_dir, config=config,
                       options=extra.pop("options", {"adapter": "lora"}), reporter=reporter or Reporter(), **extra)


def words_reward(prompts, completions) -> torch.Tensor:
    return torch.tensor([float(len(c.split())) for c in completions])


# -- settings ---------------------------------------------------------------------------

def test_config_defaults_follow_the_tldr_reproduction():
    config = PPOConfig()
    assert (config.gamma, config.lam, config.cliprange, config.cliprange_value) == (1.0, 0.95, 0.2, 0.2)
    assert (config.num_ppo_epochs, config.kl_coef, config.missing_eos_penalty) == (4, 0.05, -1.0)
    assert config.batch_size % config.mini_batch_size == 0
    for spec in dataclasses.fields(PPOConfig):
        assert spec.metadata.get("help"), f"{spec.name} has no help"


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 8, "mini_batch_size": 3}, "mini_batch_size \\(3\\) must divide batch_size \\(8\\)"),
    ({"learning_rate": -1e-5}, "learning_rate must not be negative"),
    ({"lam": 1.5}, "lam must be between 0 and 1"),
    ({"temperature": 0.0}, "temperature must be greater than 0"),
])
def test_config_refuses_bad_values_in_one_sentence(overrides, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**overrides)


def test_methods_resolve_checks_ppo_settings():
    from rlhf.train.methods import SettingsError, resolve

    config, options = resolve("ppo", {"batch_size": 4, "mini_batch_size": 2, "adaptive_kl": True})
    assert config["batch_size"] == 4 and config["adaptive_kl"] is True and options["adapter"] == "lora"
    with pytest.raises(SettingsError, match="mini_batch_size"):
        resolve("ppo", {"batch_size": 8, "mini_batch_size": 3})


# -- refusals ---------------------------------------------------------------------------

def test_no_reward_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingError, match="PPO needs a reward model: train one with `rlhf train reward`"):
        train(inputs_for(tiny_model_dir, tmp_path / "out", TINY))


def test_no_prompts_is_refused(tiny_model_dir, tmp_path):
    empty = pd.DataFrame({"prompt": [[], []]})
    with pytest.raises(TrainingError, match="PPO needs prompts"):
        train(inputs_for(tiny_model_dir, tmp_path / "out", TINY, data=empty), reward_fn=words_reward)


def test_bad_setting_is_a_training_error(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingError, match="must divide"):
        train(inputs_for(tiny_model_dir, tmp_path / "out", {**TINY, "mini_batch_size": 3}), reward_fn=words_reward)


def test_cancelled_job_stops_without_a_model(tiny_model_dir, tmp_path):
    reporter = Reporter()
    reporter.cancel_requested = True
    with pytest.raises(Cancelled):
        train(inputs_for(tiny_model_dir, tmp_path / "out", TINY, reporter), reward_fn=words_reward)
    assert reporter.history == []
    assert not (tmp_path / "out").exists()


def test_bad_reward_function_output_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingError, match="one score per completion"):
        train(inputs_for(tiny_model_dir, tmp_path / "out", TINY), reward_fn=lambda p, c: torch.zeros(len(c) + 1))


# -- the loop on the tiny model ---------------------------------------------------------

def test_two_iterations_train_report_and_save_an_adapter(tiny_model_dir, tmp_path):
    reporter = Reporter()
    seen: list[list[str]] = []

    def reward(prompts, completions):
        assert len(prompts) == len(completions) == TINY["batch_size"]
        for prompt in prompts:   # plain lists of {role, content}, whatever Parquet made of them
            assert type(prompt) is list and prompt == [{"role": "user", "content": prompt[0]["content"]}]
            assert prompt[0]["content"] in PROMPTS
        seen.append(completions)
        return words_reward(prompts, completions)

    prompt_frame().to_parquet(tmp_path / "data.parquet")   # as the worker gets it: cells become numpy arrays
    data = pd.read_parquet(tmp_path / "data.parquet")
    result = train(inputs_for(tiny_model_dir, tmp_path / "out", {**TINY, "max_steps": 2}, reporter, data=data),
                   reward_fn=reward)

    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tiny_model_dir.resolve())
    assert [row["step"] for row in reporter.history] == [1, 2]
    assert reporter.step == reporter.total == 2
    for row in reporter.history:
        assert set(METRICS) <= set(row)
    assert len(seen) == 2
    first, last = reporter.history
    assert result["reward/mean_first"] == pytest.approx(first["reward/mean"])
    assert result["reward/mean"] == pytest.approx(last["reward/mean"])
    assert first["reward/mean"] == pytest.approx(sum(len(c.split()) for c in seen[0]) / 4)
    assert first["objective/kl"] == pytest.approx(0.0, abs=1e-5)   # the policy starts as the reference
    assert 1 <= last["response/length"] <= TINY["response_length"]
    # the random tiny model never says EOS within 4 tokens: every score becomes the -1 penalty
    assert first["response/eos_fraction"] == 0.0
    assert first["objective/scores"] == pytest.approx(-1.0)
    assert abs(last["objective/kl"]) > 1e-6   # it moved away from the reference


def test_without_updates_rollout_and_training_logprobs_agree(tiny_model_dir, tmp_path):
    """learning_rate 0: the ratio stays exactly 1 (so the log-probabilities taken at rollout
    time, on the whole batch, match those of the minibatches: padding and positions are
    handled alike), nothing is clipped, and the policy never leaves the reference."""
    reporter = Reporter()
    train(inputs_for(tiny_model_dir, tmp_path / "out", {**TINY, "max_steps": 2, "learning_rate": 0.0}, reporter),
          reward_fn=words_reward)
    for row in reporter.history:
        assert row["policy/approx_kl"] == pytest.approx(0.0, abs=1e-8)
        assert row["policy/clipfrac"] == 0.0
        assert row["objective/kl"] == pytest.approx(0.0, abs=1e-5)


def test_adaptive_kl_coefficient_moves_after_each_iteration(tiny_model_dir, tmp_path):
    reporter = Reporter()
    config = {**TINY, "max_steps": 2, "learning_rate": 0.0, "adaptive_kl": True, "kl_coef": 0.1,
              "target_kl": 6.0, "kl_horizon": 100}
    train(inputs_for(tiny_model_dir, tmp_path / "out", config, reporter), reward_fn=words_reward)
    first, second = reporter.history
    assert first["objective/kl_coef"] == pytest.approx(0.1)
    # KL 0 against a target of 6: error clipped at -0.2, over 4 rollouts of a horizon of 100
    assert second["objective/kl_coef"] == pytest.approx(0.1 * (1 - 0.2 * 4 / 100))


@pytest.mark.parametrize("adapter, saved", [("full", "model.safetensors"), ("prompt", "adapter_config.json")])
def test_full_fine_tuning_and_soft_prompt(tiny_model_dir, tmp_path, adapter, saved):
    reporter = Reporter()
    train(inputs_for(tiny_model_dir, tmp_path / "out", {**TINY, "max_steps": 1}, reporter,
                     options={"adapter": adapter, "num_virtual_tokens": 4}), reward_fn=words_reward)
    assert (tmp_path / "out" / saved).is_file()
    kl = reporter.history[0]["objective/kl"]
    if adapter == "full":   # the frozen copy is the reference: the same model at the start
        assert kl == pytest.approx(0.0, abs=1e-5)
    else:   # a random soft prompt moves the policy away from the reference before any update
        assert kl > 0.0


def test_qlora_is_refused_on_the_cpu(tiny_model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("QLoRA can run here")
    with pytest.raises(TrainingError, match="QLoRA needs a CUDA GPU"):
        train(inputs_for(tiny_model_dir, tmp_path / "out", TINY, options={"adapter": "qlora"}), reward_fn=words_reward)


# -- with a reward model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A randomly initialised scalar-head Llama with scores that differ visibly between
    texts, and a reward.json offset as the reward trainer writes it."""
    directory = save_reward_model(tmp_path_factory.mktemp("tiny-reward"), tiny_model_dir, visible_scores=True)
    (directory / "reward.json").write_text(json.dumps({"offset": 0.25}))
    return directory


def test_value_model_starts_from_the_reward_model(tiny_reward_dir, tiny_model_dir, tmp_path):
    from rlhf.modeling import loading
    from rlhf.train.ppo import Rollout, _token_scores

    tokenizer = loading.load_tokenizer(tiny_model_dir)
    scorer = RewardScorer(tiny_reward_dir, "cpu")
    inputs = inputs_for(tiny_model_dir, tmp_path / "out", TINY, reward_path=tiny_reward_dir)
    values = ValueModel.load(inputs, scorer, tokenizer, PPOConfig(), torch.device("cpu"))
    ids = torch.tensor([[2, 2, 5, 6, 7, 8], [3, 4, 5, 6, 7, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    rollout = Rollout(ids[:, :4], mask[:, :4], ids[:, 4:], mask[:, 4:], torch.tensor([False, False]), ["", ""])
    with torch.no_grad():
        expected = _token_scores(scorer.model, ids, mask)[:, 3:5]   # states before each response token
        assert torch.allclose(values.forward(rollout), expected, atol=1e-5)   # LoRA starts as a no-op
    head = [name for name, p in values.model.named_parameters() if p.requires_grad and "score" in name]
    assert head, "the value head must be trained"


def test_ppo_against_a_reward_model(tiny_reward_dir, tiny_model_dir, tmp_path):
    reporter = Reporter()
    result = train(inputs_for(tiny_model_dir, tmp_path / "out", {**TINY, "max_steps": 1, "missing_eos_penalty": None},
                              reporter, reward_path=tiny_reward_dir))
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert set(METRICS) <= set(result)
    # no EOS penalty: the scores that trained are the reward model's own
    assert result["objective/scores"] == pytest.approx(result["reward/mean"])


# -- the real model ---------------------------------------------------------------------

@pytest.mark.integration
def test_reward_rises_on_the_real_model(real_model_dir, tmp_path):
    """SmolLM2 starts about two answers in three with "The" ("The capital of France is
    Paris."). Rewarding answers that start otherwise, PPO must raise the mean reward within
    two iterations, while the summed KL to the reference stays bounded. (Seeds 0 to 3 went
    from 0.31, 0.38, 0.56, 0.44 at the first iteration to 0.66, 0.91, 0.78, 0.72 over the
    next two, with KL at most 2.6, 4.9, 2.7, 3.1.)

    Sized for two shared CPU cores (about a minute): 16 rollouts of 4 tokens per iteration
    (the reward only looks at the first word), LoRA on the upper half of the layers (the
    backward pass stops there), a high learning rate, a short system prompt (no default one).
    Two epochs of two minibatches per iteration, so clipping is at work from the second
    minibatch on."""
    def not_the(prompts, completions):
        return torch.tensor([0.0 if c.startswith("The") else 1.0 for c in completions])

    reporter = Reporter()
    config = {"max_steps": 3, "batch_size": 16, "mini_batch_size": 8, "num_ppo_epochs": 2, "response_length": 4,
              "learning_rate": 1e-3, "missing_eos_penalty": None, "seed": 0}
    upper_half = r".*layers\.(1[5-9]|2[0-9])\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    questions = PROMPTS + ["What colour is the sky?", "How many legs does a spider have?",
                           "What is the opposite of hot?", "Name a fruit."]
    data = pd.DataFrame({"prompt": [[{"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": q}] for q in questions]})
    result = train(inputs_for(real_model_dir, tmp_path / "out", config, reporter, data=data,
                              options={"adapter": "lora", "lora_target": upper_half}), reward_fn=not_the)

    rewards = [row["reward/mean"] for row in reporter.history]
    kls = [row["objective/kl"] for row in reporter.history]
    print("mean reward by iteration", rewards, "KL", kls)
    assert sum(rewards[-2:]) / 2 >= rewards[0] + 0.15, rewards
    assert max(kls) < 8.0, kls   # nats, summed over at most 4 tokens
    assert result["reward/mean_first"] == rewards[0]
    assert (tmp_path / "out" / "adapter_config.json").is_file()
