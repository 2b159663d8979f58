"""The TRL policy trainers (SFT, DPO, KTO, GRPO, RLOO): each trains a step or two on the
tiny random Llama and saves what it should (a LoRA or soft-prompt adapter, or full
weights), on top of a LoRA version as well; too little data is refused in one sentence;
a cancelled job saves nothing. Integration tests on the real SmolLM2, one per method
family, that a short job moves a held-out measure beyond its noise (a no-op fails them):
DPO, KTO and SFT, trained on rankings with a hidden preference made up here, raise the
policy's log-probability margin of the preferred over the other completion on held-out
prompts; GRPO, rewarded for answers that do not open with "The", lowers the chance of
that opening on held-out questions."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf.train import common, dpo, kto, online, sft
from rlhf.modeling import loading
from rlhf.modeling.logprobs import completion_logprobs
from rlhf.train.common import Cancelled, Reporter, TrainInputs
from rlhf.errors import TrainingError
from rlhf.train.methods import resolve

# every test here with one torch thread (see the fixture)
pytestmark = pytest.mark.usefixtures("one_thread")


def user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def parquet_round_trip(frame: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """What the worker reads: message cells come back as numpy arrays of dicts."""
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    return pd.read_parquet(path)


def pair_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"prompt": user_turn(f"Question {i}?"), "chosen": said(f"Certainly! Answer {i}."),
                          "rejected": said(f"No idea about {i}."), "margin": 1.0, "comparison_id": i}
                         for i in range(n)])


def unpaired_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"prompt": user_turn(f"Question {i // 2}?"),
                          "completion": said(f"Certainly! Answer {i}." if i % 2 == 0 else f"No idea {i}."),
                          "label": i % 2 == 0, "comparison_id": i // 2} for i in range(n)])


def sft_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"prompt": user_turn(f"Question {i}?"), "completion": said(f"Answer number {i}."),
                          "comparison_id": i} for i in range(n)])


def prompt_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"prompt": user_turn(f"Tell me about topic {i}."), "prompt_id": i} for i in range(n)])


# the guardrails run in every job, on two prompts of four tokens here
TINY_GUARD = {"guard_prompts": 2, "guard_max_new_tokens": 4}
FAST = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 128, **TINY_GUARD}
ONLINE_FAST = {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8,
               **TINY_GUARD}


def run(method: str, frame: pd.DataFrame, base: Path, out: Path, reward: Path | None = None,
        reporter: Reporter | None = None, **overrides) -> tuple[dict, Reporter]:
    """Train `method` with the workbench's settings check (`resolve`) on top."""
    fast = ONLINE_FAST if method in ("grpo", "rloo") else FAST
    config, options = resolve(method, {**fast, **overrides})
    reporter = reporter or Reporter()
    inputs = TrainInputs(frame, base, out, config, options, reward_path=reward, reporter=reporter)
    metrics = online.train(inputs, method) if method in ("grpo", "rloo") else \
        {"sft": sft, "dpo": dpo, "kto": kto}[method].train(inputs)
    return metrics, reporter


def adapter_config(path: Path) -> dict:
    return json.loads((path / loading.ADAPTER_CONFIG).read_text())


def logged_losses(reporter: Reporter) -> list[float]:
    return [row["loss"] for row in reporter.history if "loss" in row]


@pytest.fixture(scope="module")
def lora_version(tmp_path_factory, tiny_model_dir) -> tuple[Path, dict, Reporter]:
    """A DPO LoRA version of the tiny model, trained on pairs read back from Parquet."""
    scratch = tmp_path_factory.mktemp("dpo-lora")
    frame = parquet_round_trip(pair_rows(10), scratch)
    metrics, reporter = run("dpo", frame, tiny_model_dir, scratch / "model", eval_fraction=0.2)
    return scratch / "model", metrics, reporter


# -- each method trains and saves ----------------------------------------------------------

def test_dpo_trains_a_lora_adapter_and_reports_held_out_margins(lora_version, tiny_model_dir):
    out, metrics, reporter = lora_version
    config = adapter_config(out)
    assert config["peft_type"] == "LORA"
    assert Path(config["base_model_name_or_path"]) == Path(tiny_model_dir).resolve()
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert not (out / "trainer").exists() and not common.scratch_dir(out).exists()  # no scratch left
    assert metrics["train/examples"] == 8 and metrics["eval/examples"] == 2
    assert metrics["train/steps"] == 2
    for key in ("train/loss", "eval/loss", "eval/rewards/margins", "eval/rewards/accuracies", "eval/rewards/chosen"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["eval/rewards/accuracies"] <= 1
    assert len(logged_losses(reporter)) == 2
    assert any("eval_rewards/margins" in row for row in reporter.history)
    assert reporter.step == 2 and reporter.total == 2


def test_kto_trains_with_desirable_and_undesirable_completions(tmp_path, tiny_model_dir):
    frame = parquet_round_trip(unpaired_rows(12), tmp_path)
    metrics, reporter = run("kto", frame, tiny_model_dir, tmp_path / "model", eval_fraction=0.2)
    assert adapter_config(tmp_path / "model")["peft_type"] == "LORA"
    assert metrics["train/desirable"] + metrics["train/undesirable"] == metrics["train/examples"] == 10
    assert metrics["eval/examples"] == 2
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["eval/loss"])
    assert "eval/kl" in metrics and "train/rewards/chosen" in metrics
    assert logged_losses(reporter)


def test_kto_weights_the_rarer_kind_up():
    assert kto.class_weights(10, 5) == {"desirable_weight": 1.0, "undesirable_weight": 2.0}
    assert kto.class_weights(3, 9) == {"desirable_weight": 3.0, "undesirable_weight": 1.0}
    assert kto.class_weights(4, 4) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}


def test_sft_trains_on_completions(tmp_path, tiny_model_dir):
    frame = parquet_round_trip(sft_rows(6), tmp_path)
    metrics, reporter = run("sft", frame, tiny_model_dir, tmp_path / "model", eval_fraction=0.0)
    assert adapter_config(tmp_path / "model")["peft_type"] == "LORA"
    assert metrics["train/examples"] == 6 and metrics["eval/examples"] == 0
    assert "eval/loss" not in metrics
    assert logged_losses(reporter) and np.isfinite(metrics["train/loss"])


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_methods_train_against_the_reward_model(method, tmp_path, tiny_model_dir, tiny_reward_dir):
    frame = parquet_round_trip(prompt_rows(4), tmp_path)
    metrics, reporter = run(method, frame, tiny_model_dir, tmp_path / "model", reward=tiny_reward_dir)
    assert adapter_config(tmp_path / "model")["peft_type"] == "LORA"
    assert not common.scratch_dir(tmp_path / "model").exists()
    assert metrics["train/examples"] == 4 and metrics["train/steps"] == 2
    for key in ("train/loss", "train/reward_first", "train/reward_last", "train/reward_mean", "train/kl"):
        assert np.isfinite(metrics[key]), key
    rewards = [row["reward"] for row in reporter.history if "reward" in row]
    assert len(rewards) == 2 and len(logged_losses(reporter)) == 2
    assert all(row["completions/max_length"] <= 8 for row in reporter.history if "completions/max_length" in row)


# -- adapters --------------------------------------------------------------------------------

def test_dpo_with_a_soft_prompt(tmp_path, tiny_model_dir):
    metrics, reporter = run("dpo", pair_rows(6), tiny_model_dir, tmp_path / "model", adapter="prompt",
                            num_virtual_tokens=4)
    config = adapter_config(tmp_path / "model")
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4
    assert logged_losses(reporter) and np.isfinite(metrics["eval/rewards/margins"])
    # the soft prompt changes what the policy prefers, and logprob_margin reads it through PEFT
    policy = loading.load_adapted_policy(tmp_path / "model")
    tokenizer = loading.load_tokenizer(tmp_path / "model")
    margins = dpo.logprob_margin(policy, tokenizer, pair_rows(2))
    assert margins.shape == (2,) and np.isfinite(margins).all()


def test_soft_prompt_cannot_be_merged(tmp_path, tiny_model_dir):
    with pytest.raises(TrainingError, match="soft prompt cannot be merged"):
        run("dpo", pair_rows(4), tiny_model_dir, tmp_path / "model", adapter="prompt", merge=True)
    assert not (tmp_path / "model").exists()


def test_kto_full_fine_tuning_saves_full_weights(tmp_path, tiny_model_dir):
    metrics, reporter = run("kto", unpaired_rows(8), tiny_model_dir, tmp_path / "model", adapter="full",
                            learning_rate=1e-3)
    out = tmp_path / "model"
    assert not loading.is_adapter(out) and (out / "model.safetensors").is_file()
    assert logged_losses(reporter)
    before = loading.load_causal_lm(tiny_model_dir).state_dict()
    after = loading.load_causal_lm(out).state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)


# -- on top of a LoRA version ----------------------------------------------------------------

def test_sft_on_top_of_a_lora_version(lora_version, tmp_path):
    parent = lora_version[0]
    metrics, reporter = run("sft", sft_rows(4), parent, tmp_path / "model")
    child = tmp_path / "model"
    assert Path(adapter_config(child)["base_model_name_or_path"]) == parent.resolve()
    assert logged_losses(reporter)
    # the child loads through its parent (merged in), and differs from it
    parent_weights = loading.load_causal_lm(parent).state_dict()
    child_weights = loading.load_causal_lm(child).state_dict()
    assert any(not torch.equal(parent_weights[n], child_weights[n]) for n in parent_weights)


@pytest.fixture(scope="module")
def distinct_lora_version(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA version far from its base (random, non-zero A and B), as a saved version is."""
    from peft import LoraConfig, get_peft_model

    out = tmp_path_factory.mktemp("distinct-lora")
    torch.manual_seed(2)
    model = get_peft_model(loading.load_causal_lm(tiny_model_dir),
                           LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    loading.save_model(model, loading.load_tokenizer(tiny_model_dir), out, tiny_model_dir, merge=False)
    return out


def test_full_fine_tuning_on_top_of_a_lora_version_keeps_the_parent_as_reference(
        distinct_lora_version, tmp_path, tiny_model_dir, tiny_reward_dir):
    # PEFT hands the merged parent back frozen: full fine-tuning must unfreeze it, and the
    # KL reference must be the parent itself (TRL would reload the parent's base by name)
    parent = distinct_lora_version
    metrics, reporter = run("grpo", prompt_rows(2), parent, tmp_path / "grpo", reward=tiny_reward_dir,
                            adapter="full", max_steps=1)
    assert not loading.is_adapter(tmp_path / "grpo") and not common.scratch_dir(tmp_path / "grpo").exists()
    assert logged_losses(reporter)
    assert abs(metrics["train/kl"]) < 1e-4  # the policy is its reference at the first step
    metrics, reporter = run("dpo", pair_rows(2), parent, tmp_path / "dpo", adapter="full", max_steps=1,
                            eval_fraction=0.0)
    assert not loading.is_adapter(tmp_path / "dpo")
    assert metrics["train/rewards/chosen"] == pytest.approx(0.0, abs=1e-4)


def test_an_empty_answer_is_a_preference_for_dpo_and_kto(tmp_path, tiny_model_dir):
    """Saying nothing can be the better answer (HH-RLHF has such pairs): it trains, not dropped."""
    pairs = pair_rows(4).assign(chosen=[said("")] * 4)
    metrics, _ = run("dpo", pairs, tiny_model_dir, tmp_path / "dpo", max_steps=1, eval_fraction=0.0)
    assert metrics["train/examples"] == 4
    unpaired = unpaired_rows(4).assign(completion=[said(""), said("No idea."), said(""), said("No idea either.")])
    metrics, _ = run("kto", unpaired, tiny_model_dir, tmp_path / "kto", max_steps=1, eval_fraction=0.0)
    assert metrics["train/examples"] == 4


def test_dpo_merge_writes_full_weights(tmp_path, tiny_model_dir):
    run("dpo", pair_rows(4), tiny_model_dir, tmp_path / "model", merge=True, max_steps=1)
    assert not loading.is_adapter(tmp_path / "model") and (tmp_path / "model" / "model.safetensors").is_file()


# -- refusals and cancellation ---------------------------------------------------------------

@pytest.mark.parametrize("method,frame,message", [
    ("dpo", pair_rows(0), "DPO needs at least one preference pair"),
    ("dpo", pair_rows(2).assign(rejected=lambda rows: rows["chosen"]), "DPO needs at least one preference pair"),
    ("kto", unpaired_rows(6).assign(label=True), "KTO needs both desirable and undesirable"),
    ("kto", unpaired_rows(0), "KTO needs both desirable and undesirable"),
    ("sft", sft_rows(0), "SFT needs at least one prompt with a completion"),
    ("sft", sft_rows(2).drop(columns=["completion"]), "SFT data has no column completion"),
    ("grpo", prompt_rows(0), "GRPO needs at least one prompt"),
])
def test_too_little_data_is_refused(method, frame, message, tmp_path, tiny_model_dir, tiny_reward_dir):
    reward = tiny_reward_dir if method == "grpo" else None
    with pytest.raises(TrainingError, match=message):
        run(method, frame, tiny_model_dir, tmp_path / "model", reward=reward)
    assert not (tmp_path / "model").exists()


def test_online_methods_need_a_reward_model(tmp_path, tiny_model_dir):
    with pytest.raises(TrainingError, match="RLOO needs a reward model"):
        run("rloo", prompt_rows(2), tiny_model_dir, tmp_path / "model", reward=None)


def test_kto_needs_a_batch_of_two(tmp_path, tiny_model_dir):
    with pytest.raises(TrainingError, match="at least 2"):
        run("kto", unpaired_rows(4), tiny_model_dir, tmp_path / "model", per_device_train_batch_size=1)


class CancelAfterFirstStep(Reporter):
    def progress(self, step, total, state="running", message=""):
        super().progress(step, total, state, message)
        if step >= 1:
            self.cancel_requested = True


def test_a_cancelled_job_stops_and_saves_nothing(tmp_path, tiny_model_dir):
    reporter = CancelAfterFirstStep()
    with pytest.raises(Cancelled):
        run("sft", sft_rows(8), tiny_model_dir, tmp_path / "model", reporter=reporter, max_steps=4)
    assert reporter.step == 1
    assert not (tmp_path / "model" / "adapter_config.json").exists()


# -- logprob_margin ----------------------------------------------------------------------------

def test_logprob_margin_is_batch_invariant_and_zero_for_identical_completions(tiny_model_dir):
    model = loading.load_causal_lm(tiny_model_dir)
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    frame = pair_rows(5)
    frame.loc[4, "chosen"] = frame.loc[4, "rejected"]
    one_by_one = dpo.logprob_margin(model, tokenizer, frame, batch_size=1)
    batched = dpo.logprob_margin(model, tokenizer, frame, batch_size=8)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-3)
    assert one_by_one[4] == pytest.approx(0.0, abs=1e-6)
    # a completion's log-probability is a sum over its tokens: strictly negative, longer is lower
    short, long = completion_logprobs(model, tokenizer, [user_turn("Hi")] * 2, [said("Yes."), said("Yes. " * 8)])
    assert long < short < 0


# -- integration: the real SmolLM2 learns a hidden preference ------------------------------------

TOPICS = ["the ocean", "volcanoes", "bread", "chess", "the moon", "bicycles", "honey bees", "rainbows", "libraries",
          "coffee", "glaciers", "owls", "trains", "gardens", "music", "deserts",
          # held out: never seen in training
          "kites", "whales", "candles", "clocks"]
HELD_OUT = 4
ASKS = ["Tell me one fact about {t}.", "Explain {t} in one sentence.", "What is interesting about {t}?",
        "Describe {t} briefly."]
BODIES = ["People have studied {t} for a very long time.", "Many people enjoy learning about {t}.",
          "You can find {t} in many parts of the world.", "There is a lot to say about {t}.",
          "{T} are a fine subject for a short talk."]


def hidden_preference_pairs(topics: list[str], rng: random.Random, mark) -> pd.DataFrame:
    """Two prompts per topic, each with two different plain answers; the chosen one carries
    the hidden property `mark(text)` (e.g. a "Certainly!" opening), the other does not."""
    rows = []
    for topic in topics:
        for ask in rng.sample(ASKS, 2):
            good, bad = (b.format(t=topic, T=topic[0].upper() + topic[1:]) for b in rng.sample(BODIES, 2))
            rows.append({"prompt": user_turn(ask.format(t=topic)), "chosen": said(mark(good)), "rejected": said(bad),
                         "margin": 1.0, "comparison_id": f"{topic} / {ask}"})
    return pd.DataFrame(rows)


def margins_before_and_after(method: str, train_frame: pd.DataFrame, held_out: pd.DataFrame, base: Path,
                             out: Path, **overrides) -> tuple[np.ndarray, np.ndarray, dict, float]:
    started = time.monotonic()
    tokenizer = loading.load_tokenizer(base)
    before = dpo.logprob_margin(loading.load_causal_lm(base), tokenizer, held_out)
    torch.manual_seed(0)
    config, options = resolve(method, {**SMALL_GUARD, **overrides})
    metrics = {"dpo": dpo, "kto": kto, "sft": sft}[method].train(TrainInputs(train_frame, base, out, config, options))
    after = dpo.logprob_margin(loading.load_causal_lm(out), tokenizer, held_out)
    return before, after, metrics, time.monotonic() - started


# LoRA on the top six of 30 layers only: no backward pass below them, so a step costs
# little more than the forward passes (each test takes 25-45 s on two busy CPU cores);
# fewer adapted weights take a higher learning rate than the all-linear default.
FAST_LORA = {"learning_rate": 5e-4}
# the guardrails on a few short samples: seconds, not the default's tens of seconds here
SMALL_GUARD = {"guard_prompts": 4, "guard_max_new_tokens": 16}
TOP_LAYERS = r".*layers\.(2[4-9])\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"


@pytest.mark.integration
def test_dpo_raises_the_held_out_margin_of_a_hidden_preference(real_model_dir, tmp_path):
    rng = random.Random(0)
    train_frame = hidden_preference_pairs(TOPICS[:12], rng, lambda text: "Certainly! " + text)  # 24 pairs
    held_out = hidden_preference_pairs(TOPICS[-HELD_OUT:], rng, lambda text: "Certainly! " + text)     # 8 pairs
    before, after, metrics, seconds = margins_before_and_after(
        "dpo", parquet_round_trip(train_frame, tmp_path), held_out, real_model_dir, tmp_path / "model",
        lora_target=TOP_LAYERS, **FAST_LORA)
    print(f"DPO in {seconds:.0f} s: held-out margin {before.mean():.2f} -> {after.mean():.2f}; {metrics}")
    assert after.mean() > before.mean() + 0.5
    assert (after > before).mean() >= 0.75
    assert metrics["eval/rewards/accuracies"] >= 0.5


@pytest.mark.integration
def test_kto_raises_the_held_out_margin_of_a_hidden_preference(real_model_dir, tmp_path):
    rng = random.Random(1)
    sign_off = lambda text: text + " Hope this helps!"  # noqa: E731
    pairs = hidden_preference_pairs(TOPICS[:10], rng, sign_off)  # 20 pairs: 20 desirable, 20 undesirable
    held_out = hidden_preference_pairs(TOPICS[-HELD_OUT:], rng, sign_off)
    unpaired = pd.concat([pairs.assign(completion=pairs["chosen"], label=True),
                          pairs.assign(completion=pairs["rejected"], label=False)], ignore_index=True)
    unpaired = unpaired[["prompt", "completion", "label", "comparison_id"]]
    before, after, metrics, seconds = margins_before_and_after(
        "kto", parquet_round_trip(unpaired, tmp_path), held_out, real_model_dir, tmp_path / "model",
        lora_target=TOP_LAYERS, **FAST_LORA)
    print(f"KTO in {seconds:.0f} s: held-out margin {before.mean():.2f} -> {after.mean():.2f}; {metrics}")
    assert after.mean() > before.mean() + 0.5
    assert (after > before).mean() >= 0.75
    assert metrics["train/desirable"] > 0 and metrics["train/undesirable"] > 0


@pytest.mark.integration
def test_sft_raises_the_held_out_margin_of_an_imitated_habit(real_model_dir, tmp_path):
    rng = random.Random(2)
    certainly = lambda text: "Certainly! " + text  # noqa: E731
    demonstrations = hidden_preference_pairs(TOPICS[:12], rng, certainly)  # the chosen answers: 24 to imitate
    held_out = hidden_preference_pairs(TOPICS[-HELD_OUT:], rng, certainly)
    demonstrations = demonstrations.assign(completion=demonstrations["chosen"])[["prompt", "completion",
                                                                                  "comparison_id"]]
    before, after, metrics, seconds = margins_before_and_after(
        "sft", parquet_round_trip(demonstrations, tmp_path), held_out, real_model_dir, tmp_path / "model",
        lora_target=TOP_LAYERS, **FAST_LORA)
    print(f"SFT in {seconds:.0f} s: held-out margin {before.mean():.2f} -> {after.mean():.2f}; {metrics}")
    assert after.mean() > before.mean() + 0.5
    assert (after > before).mean() >= 0.75
    assert "guard/kl" in metrics and "no preference pairs" in metrics["guard/note"]


QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Which animal barks?",
             "What colour is the sky?", "How many legs does a spider have?", "What is the opposite of hot?",
             "Name a fruit.",
             # held out: never seen in training
             "What is the capital of Italy?", "Name a vegetable.", "What is 3 + 3?", "Which animal meows?",
             "What colour is grass?", "How many wheels does a bicycle have?", "What is the opposite of up?",
             "Name a flower."]


def briefly(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, *user_turn(question)]


def opening_logprob(model_dir: Path, prompts: list[list[dict]], word: str = "The") -> np.ndarray:
    """log p(the answer's first token is `word`'s | prompt) per prompt: one forward pass each."""
    tokenizer, model = loading.load_tokenizer(model_dir), loading.load_causal_lm(model_dir)
    token = tokenizer(word, add_special_tokens=False)["input_ids"][0]
    values = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True,
                                                return_tensors="pt")
            values.append(float(torch.log_softmax(model(**ids).logits[0, -1].float(), dim=-1)[token]))
    return np.array(values)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_methods_lower_the_held_out_chance_of_a_disfavoured_opening(method, real_model_dir, tmp_path):
    """SmolLM2 opens about two answers in three with "The" (see the PPO integration test);
    GRPO (or RLOO) rewarded for any other opening must make "The" less likely on questions
    it never saw. Sized like the PPO test: 4-token answers, LoRA on the upper half of the
    layers, a high learning rate."""
    def not_the(prompts, completions, **columns):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [0.0 if text.strip().startswith("The") else 1.0 for text in texts]

    train_prompts = [briefly(q) for q in QUESTIONS[:8]]
    held_out = [briefly(q) for q in QUESTIONS[8:]]
    started = time.monotonic()
    before = opening_logprob(real_model_dir, held_out)
    upper_half = r".*layers\.(1[5-9]|2[0-9])\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    config, options = resolve(method, {**SMALL_GUARD, "max_steps": 4, "per_device_train_batch_size": 8,
                                       "num_generations": 4, "max_completion_length": 4, "learning_rate": 1e-3,
                                       "temperature": 1.0, "lora_target": upper_half})
    frame = parquet_round_trip(pd.DataFrame({"prompt": train_prompts}), tmp_path)
    torch.manual_seed(0)
    metrics = online.train(TrainInputs(frame, real_model_dir, tmp_path / "model", config, options), method,
                           reward_fn=not_the)
    after = opening_logprob(tmp_path / "model", held_out)
    print(f"{method} in {time.monotonic() - started:.0f} s: held-out log p(The) {before.mean():.2f} ->"
          f" {after.mean():.2f}; {metrics}")
    assert after.mean() < before.mean() - 0.5
    assert (after < before).mean() >= 0.75
    assert metrics["guard/kl"] > 0 and "guard/heldout_accuracy" not in metrics


# -- memory ----------------------------------------------------------------------------------

ROWS_FOR = {"dpo": (pair_rows, ("chosen", "rejected"), 2), "kto": (unpaired_rows, ("completion",), 2),
            "sft": (sft_rows, ("completion",), 1), "grpo": (prompt_rows, (), 1)}


def longest_encoded(base: Path, frame: pd.DataFrame, completions: tuple[str, ...]) -> int:
    """The longest prompt with one of its completions through the chat template, worked out here."""
    tokenizer = loading.load_tokenizer(base)
    texts = [[*row["prompt"], *(row[column] if column else [{"role": "assistant", "content": ""}])]
             for row in frame.to_dict("records") for column in completions or (None,)]
    return max(len(tokenizer.apply_chat_template(text, tokenize=True, return_dict=True)["input_ids"])
               for text in texts)


@pytest.fixture
def built(monkeypatch) -> list:
    """Every trainer config `plumbing.trainer_config` builds, in order."""
    from rlhf.train import plumbing

    configs = []
    original = plumbing._built
    monkeypatch.setattr(plumbing, "_built", lambda cls, values: configs.append(original(cls, values)) or configs[-1])
    return configs


@pytest.mark.parametrize("method", sorted(ROWS_FOR))
def test_a_policy_job_recomputes_activations_that_would_not_fit(method, tmp_path, tiny_model_dir, tiny_reward_dir,
                                                                 built, monkeypatch, caplog):
    """With (almost) no memory free, every policy trainer is built with activation checkpointing,
    for the micro-batch its data makes (batch x sequences per example x the longest, plus what
    GRPO samples), and still trains."""
    import logging

    from rlhf.train import memory

    rows, completions, sequences = ROWS_FOR[method]
    frame = rows(6)
    monkeypatch.setattr(memory, "available_bytes", lambda: 1)
    with caplog.at_level(logging.INFO, logger="rlhf.train.common"):
        metrics, _ = run(method, parquet_round_trip(frame, tmp_path), tiny_model_dir, tmp_path / "model",
                         reward=tiny_reward_dir if method == "grpo" else None, eval_fraction=0.0)
    assert np.isfinite(metrics["train/loss"])
    assert built[-1].activation_checkpointing is True
    batch = (ONLINE_FAST if method == "grpo" else FAST)["per_device_train_batch_size"]
    generated = ONLINE_FAST["max_completion_length"] if method == "grpo" else 0
    tokens = batch * sequences * (longest_encoded(tiny_model_dir, frame, completions) + generated)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Memory: ")]
    assert f"for {tokens} tokens a micro-batch" in line and "recomputed" in line


def test_a_policy_job_keeps_activations_that_fit(tmp_path, tiny_model_dir, built, monkeypatch):
    from rlhf.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**50)
    run("dpo", pair_rows(4), tiny_model_dir, tmp_path / "model", eval_fraction=0.0)
    assert [config.activation_checkpointing for config in built] == [False]
