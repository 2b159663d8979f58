"""The feature-based reward model (`reward_head`) on the tiny Llama: it trains, saves the
head beside the base's weights by hard link, scores through the one reward-model path
exactly as the features say, and embeds each completion once (the cache)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rlhf.home import Home
from rlhf.modeling import loading
from rlhf.modeling.scoring import RewardScorer, encode_conversation
from rlhf.train import common
from rlhf.train.methods import SettingsError, resolve
from rlhf.train.reward_head import HEAD_FILE, train

ANSWERS = ["Yes.", "No, not at all.", "Maybe so, but ask again later.", "Sure!", "I would rather not say that.",
           "It depends on the weather and on what you mean.", "Blue.", "Ten."]


def rankings(n: int = 12) -> pd.DataFrame:
    """`n` rankings of three completions each, longest first, every fourth with a tie; the
    prompts repeat so that some completions come back in other comparisons."""
    rows = []
    for c in range(n):
        texts = [ANSWERS[(c + k) % len(ANSWERS)] for k in range(3)]
        order = sorted(range(3), key=lambda j: -len(texts[j]))
        best, middle, worst = ("ABC"[j] for j in order)
        ranking = f"{best} > {middle} > {worst}" if c % 4 else f"{best} = {middle} > {worst}"
        rows.append({"ranking_id": c, "comparison_id": c, "prompt": [{"role": "user", "content": f"Question {c % 4}?"}],
                     "completions": texts, "ranking": ranking, "user": "ann", "model_versions": ["base"] * 3})
    return pd.DataFrame(rows)


@pytest.fixture
def home(tmp_path, tiny_model_dir) -> Home:
    home = Home(tmp_path / "home")
    home.models_dir.mkdir(parents=True)
    home.link_base_model(tiny_model_dir)
    return home


def run(home: Home, job: int, **settings) -> tuple[dict, Path]:
    config, options = resolve("reward_head", {"max_steps": 60, "eval_fraction": 0.25, **settings})
    out = home.jobs_dir / str(job) / "model.partial"
    out.parent.mkdir(parents=True)
    metrics = train(common.TrainInputs(rankings(), home.model_dir("base"), out, config, options))
    return metrics, out


def expected_scores(base: Path, out: Path, prompts, texts, pooling: str) -> list[float]:
    """Each conversation alone through the base (no padding), pooled, times the saved head,
    minus the offset: what the scorer must give."""
    model = loading.load_causal_lm(base).eval()
    tokenizer = loading.load_tokenizer(base)
    head = load_file(str(out / HEAD_FILE))["score.weight"][0]
    offset = json.loads((out / "reward.json").read_text())["offset"]
    scores = []
    with torch.inference_mode():
        for prompt, text in zip(prompts, texts):
            ids = torch.tensor([encode_conversation(tokenizer, prompt, text)])
            hidden = model.model(input_ids=ids).last_hidden_state[0]
            feature = hidden.mean(dim=0) if pooling == "mean" else hidden[-1]
            scores.append(float(feature @ head) - offset)
    return scores


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_trains_saves_a_linked_head_and_scores_through_the_reward_model_path(home, pooling):
    metrics, out = run(home, 1, pooling=pooling)

    assert math.isfinite(metrics["train_loss"]) and metrics["train/pairs"] > 0
    assert metrics["eval/rankings"] >= 1 and 0 <= metrics["eval/accuracy"] <= 1
    distinct = {(row["prompt"][0]["content"], text)
                for row in rankings().to_dict("records") for text in row["completions"]}
    assert metrics["train/embedded"] == metrics["train/completions"] == len(distinct) < 3 * len(rankings())
    info = json.loads((out / "reward.json").read_text())
    assert info["pooling"] == pooling and info["saved"] == "linked"
    base_weights = home.model_dir("base") / "model.safetensors"
    assert os.stat(out / "base.safetensors").st_ino == os.stat(base_weights).st_ino   # linked, not copied
    assert (out / HEAD_FILE).stat().st_size < 10_000

    prompts = [[{"role": "user", "content": "Question 1?"}]] * 3 + [[{"role": "user", "content": "Another one?"}]]
    texts = ["Yes.", "It depends on the weather and on what you mean.", "Ten.", "Blue."]
    scores = RewardScorer(out, "cpu").score(prompts, texts, batch_size=4)   # padded together
    assert scores == pytest.approx(expected_scores(home.model_dir("base"), out, prompts, texts, pooling), abs=1e-4)
    assert len({round(s, 4) for s in scores}) == 4


def test_features_are_cached_per_version_and_pooling_in_the_home(home):
    first, out = run(home, 1)
    again, out_again = run(home, 2)

    assert first["train/embedded"] > 0 and again["train/embedded"] == 0
    assert again["train/cached"] == first["train/completions"]
    cached = list((home.root / "features" / "base" / "last-float32").rglob("*.npy"))
    assert len(cached) == first["train/completions"]
    head, head_again = (load_file(str(d / HEAD_FILE))["score.weight"] for d in (out, out_again))
    assert torch.equal(head, head_again)
    mean, _ = run(home, 3, pooling="mean")
    assert mean["train/embedded"] == first["train/completions"]   # another pooling, other features


def test_a_tie_aware_loss_learns_its_tie_parameter_from_tied_pairs(home):
    metrics, out = run(home, 1, loss="davidson")
    assert metrics["train/tied_pairs"] > 0 and metrics["nu"] != pytest.approx(2.0)
    assert json.loads((out / "reward.json").read_text())["tie_parameter"]["learned"] is True


def test_an_unknown_pooling_is_refused_in_one_sentence():
    with pytest.raises(SettingsError, match="pooling must be one of last, mean"):
        resolve("reward_head", {"pooling": "max"})
