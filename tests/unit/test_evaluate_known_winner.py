"""Automatic evaluation (`rlhf.compare.evaluate`) with a known winner: two parrots (tiny
Llamas that answer every prompt with one fixed text, see `helpers.save_parrot`) are
judged by a reward model with visible scores, and the win rate, mean rewards, lengths and
KL from the base policy are checked against figures the test computes itself, with
transformers directly, on the same (known) samples."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf.compare import evaluate
from rlhf.modeling import precision
from rlhf.modeling.model_cache import ModelCache

from helpers import save_parrot, save_reward_model

PROMPTS = ["Hello", "Name a colour."]
TEXTS = ("Paris is lovely", "Blue sky today")


def chat_ids(tokenizer, prompt: str, answer: str | None = None) -> list[int]:
    messages = [{"role": "user", "content": prompt}]
    if answer is None:
        return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                  return_dict=True)["input_ids"])
    messages.append({"role": "assistant", "content": answer})
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


# Each directory is loaded once per module: a tokenizer of 49k entries takes a while to read.
tokenizer_at = cache(AutoTokenizer.from_pretrained)


@cache
def classifier_at(model_dir):
    return AutoModelForSequenceClassification.from_pretrained(model_dir).eval()


@cache
def causal_lm_at(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def reward_of(reward_dir, prompt: str, answer: str) -> float:
    """The reward model's raw score of one conversation: the classifier on its own, one row, no padding."""
    tokenizer, model = tokenizer_at(reward_dir), classifier_at(reward_dir)
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([chat_ids(tokenizer, prompt, answer)])).logits[0, 0])


def completion_logprob(model_dir, prompt: str, answer: str) -> float:
    """log p(answer tokens + EOS | chat prompt) under the model at `model_dir`, temperature 1."""
    tokenizer, model = tokenizer_at(model_dir), causal_lm_at(model_dir)
    context = chat_ids(tokenizer, prompt)
    response = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = torch.tensor([context + response])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    positions = torch.arange(len(context) - 1, ids.shape[1] - 1)
    return float(logprobs[positions, ids[0, len(context):]].sum())


@pytest.fixture(autouse=True)
def float32(monkeypatch):
    """The evaluation samples and scores in float32, as the figures computed here do: on a CPU
    with native bf16 it would pick bf16 (`rlhf.modeling.precision`), and then a KL of about 59
    nats agrees with the float32 one to bf16's few thousandths only, by luck of the texts'
    token counts (the precision choice has its own tests)."""
    monkeypatch.setenv(precision.ENV_VAR, "fp32")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    """The reward model, and the two parrots: `winner` says the text the reward model
    scores higher on every prompt (chosen here by scoring both texts independently)."""
    root = tmp_path_factory.mktemp("known-winner")
    reward_dir = save_reward_model(root / "rm", tiny_model_dir, seed=3, visible_scores=True)
    scores = {text: [reward_of(reward_dir, prompt, text) for prompt in PROMPTS] for text in TEXTS}
    high, low = sorted(TEXTS, key=lambda text: sum(scores[text]), reverse=True)
    assert all(h - l > 1e-3 for h, l in zip(scores[high], scores[low])), scores  # a clear winner on each prompt
    return {"rm": reward_dir, "winner": save_parrot(root / "winner", tiny_model_dir, high),
            "loser": save_parrot(root / "loser", tiny_model_dir, low), "texts": (high, low), "scores": scores}


def test_the_side_the_reward_model_prefers_wins_every_prompt_with_the_figures_computed_by_hand(
        models, tiny_model_dir):
    high, low = models["texts"]
    result = evaluate.evaluate(None, models["winner"], models["loser"], PROMPTS, reward_version=models["rm"],
                               reference=tiny_model_dir, n=len(PROMPTS), max_new_tokens=12, cache=ModelCache())
    assert (result["wins"], result["ties"], result["losses"], result["win_rate"]) == (2, 0, 0, 1.0)
    # No reward.json: no offset, the mean reward is the classifier's mean raw score.
    assert result["mean_reward_a"] == pytest.approx(sum(models["scores"][high]) / 2, abs=1e-4)
    assert result["mean_reward_b"] == pytest.approx(sum(models["scores"][low]) / 2, abs=1e-4)
    tokenizer = tokenizer_at(tiny_model_dir)
    for side, text, parrot in (("a", high, models["winner"]), ("b", low, models["loser"])):
        assert result[f"mean_length_{side}"] == len(tokenizer.encode(text, add_special_tokens=False)) + 1
        assert result[f"eos_rate_{side}"] == 1.0
        # k1 on the parrot's own (certain) samples: log p_parrot(y) - log p_base(y), averaged over prompts.
        kl = [completion_logprob(parrot, prompt, text) - completion_logprob(tiny_model_dir, prompt, text)
              for prompt in PROMPTS]
        assert result[f"kl_{side}"] == pytest.approx(sum(kl) / len(kl), rel=1e-4, abs=1e-3)
        assert result[f"kl_stderr_{side}"] == pytest.approx(abs(kl[0] - kl[1]) / 2, rel=1e-3, abs=1e-3)
        assert result[f"kl_{side}"] > 1.0  # the base model is far from sure of any parrot's words


def test_swapping_the_sides_makes_the_same_side_win(models, tiny_model_dir):
    result = evaluate.evaluate(None, models["loser"], models["winner"], PROMPTS, reward_version=models["rm"],
                               reference=None, n=len(PROMPTS), max_new_tokens=12, cache=ModelCache())
    assert (result["wins"], result["losses"], result["win_rate"]) == (0, 2, 0.0)
    assert result["kl_a"] is None and result["kl_b"] is None
    assert math.isclose(result["mean_reward_b"], sum(models["scores"][models["texts"][0]]) / 2, abs_tol=1e-4)
