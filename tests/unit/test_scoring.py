"""Scoring with a saved reward model (offset, batching, TRL reward-function use) and
`evaluate_pairs` on a preference file written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf.collect.formats import read_preference_pairs
from rlhf.modeling.scoring import RewardScorer, encode_conversation, evaluate_pairs, score_ids
from rlhf.modeling import loading
from rlhf.train.reward import load_classifier

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Say hi."}],
]
COMPLETIONS = ["Paris.", "Blue, or perhaps a deep and quiet green, like a forest after rain.", "Hi!"]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """An untrained scalar-head model saved the way the trainer saves one."""
    directory = tmp_path_factory.mktemp("reward")
    torch.manual_seed(0)
    model = load_classifier(tiny_model_dir)
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    loading.save_model(model, tokenizer, directory, tiny_model_dir, merge=True)
    return directory


def raw_scores(directory: Path, prompts, completions) -> list[float]:
    """Each sequence alone through the model: no padding involved."""
    model = loading.load_reward_model(directory).eval()
    tokenizer = loading.load_tokenizer(directory)
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([encode_conversation(tokenizer, p, c)])).logits[0, 0].item()
                for p, c in zip(prompts, completions)]


def test_scores_subtract_the_offset_and_do_not_depend_on_batching(reward_dir):
    raw = raw_scores(reward_dir, PROMPTS, COMPLETIONS)
    assert len(set(round(r, 6) for r in raw)) == 3   # a model that tells them apart

    (reward_dir / "reward.json").unlink(missing_ok=True)
    assert RewardScorer(reward_dir).score(PROMPTS, COMPLETIONS) == pytest.approx(raw, abs=1e-5)

    (reward_dir / "reward.json").write_text(json.dumps({"offset": 0.25, "loss": "bradley_terry"}))
    scorer = RewardScorer(reward_dir)
    assert scorer.offset == 0.25
    shifted = [r - 0.25 for r in raw]
    # Right-padded batches of mixed lengths score as each sequence alone.
    assert scorer.score(PROMPTS, COMPLETIONS, batch_size=3) == pytest.approx(shifted, abs=1e-5)
    assert scorer.score(PROMPTS, COMPLETIONS, batch_size=1) == pytest.approx(shifted, abs=1e-5)


def test_scorer_takes_text_prompts_and_conversational_completions_as_a_trl_reward_function(reward_dir):
    scorer = RewardScorer(reward_dir)
    text = scorer.score(["Say hi."], ["Hi!"])
    assert scorer(prompts=[PROMPTS[2]], completions=[[{"role": "assistant", "content": "Hi!"}]]) == pytest.approx(
        text, abs=1e-6)
    assert scorer.__name__ == "reward_model"
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        scorer.score(PROMPTS[:2], COMPLETIONS[:1])
    assert score_ids(scorer.model, [], 0) == []


class LengthScorer:
    """A stand-in reward model: the reward is the completion's length in characters."""

    def score(self, prompts, completions, batch_size=8):
        assert all(isinstance(p, list) and p[-1]["role"] == "user" for p in prompts)
        return [float(len(c)) for c in completions]


def write_pairs(path: Path, pairs: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in pairs))
    return path


def test_evaluate_pairs_counts_right_wrong_and_equal_scores_apart(tmp_path):
    frame = read_preference_pairs(write_pairs(tmp_path / "pairs.jsonl", [
        ("Q1", "longer answer", "short"),   # right, margin 8
        ("Q2", "longer answer", "tiny"),    # right, margin 9
        ("Q3", "ok", "much longer one"),    # wrong, margin -13
        ("Q4", "same", "size"),             # scored equal: neither right nor wrong
    ]))
    result = evaluate_pairs(LengthScorer(), frame)
    assert result["pairs"] == 4 and result["ties"] == 1
    assert result["right"] == 2 and result["wrong"] == 1
    assert result["accuracy"] == pytest.approx(2 / 3)
    # Wilson's score interval by hand, p = 2/3, n = 3, z = 1.96: centre (p + z²/2n) / (1 + z²/n)
    # = 0.5731, half-width z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²) = 0.3654
    assert (result["accuracy_low"], result["accuracy_high"]) == (pytest.approx(0.2077, abs=1e-4),
                                                                 pytest.approx(0.9385, abs=1e-4))
    assert result["mean_margin"] == pytest.approx((8 + 9 - 13 + 0) / 4)
    assert "human_ties" not in result


def test_evaluate_pairs_reports_human_ties_apart(tmp_path):
    frame = read_preference_pairs(write_pairs(tmp_path / "pairs.jsonl", [
        ("Q1", "longer answer", "short"), ("Q2", "abc", "abcdef"), ("Q3", "abcd", "efgh")]))
    frame["tie"] = [False, True, True]
    result = evaluate_pairs(LengthScorer(), frame)
    assert result["right"] == 1 and result["wrong"] == 0 and result["accuracy"] == 1.0
    assert result["human_ties"] == 2 and result["human_tie_mean_abs_diff"] == pytest.approx(1.5)
    assert result["mean_margin"] == pytest.approx(8.0)


def test_evaluate_pairs_with_a_saved_reward_model(reward_dir, tmp_path):
    frame = read_preference_pairs(write_pairs(tmp_path / "pairs.jsonl", [
        ("What is 2 + 2?", "4", "5"), ("Name a fruit.", "An apple.", "A chair.")]))
    scorer = RewardScorer(reward_dir)
    result = evaluate_pairs(scorer, frame)
    chosen = scorer.score([[{"role": "user", "content": "What is 2 + 2?"}],
                           [{"role": "user", "content": "Name a fruit."}]], ["4", "An apple."])
    rejected = scorer.score([[{"role": "user", "content": "What is 2 + 2?"}],
                             [{"role": "user", "content": "Name a fruit."}]], ["5", "A chair."])
    diffs = [c - r for c, r in zip(chosen, rejected)]
    assert result["pairs"] == 2 and result["right"] + result["wrong"] + result["ties"] == 2
    assert result["mean_margin"] == pytest.approx(sum(diffs) / 2, abs=1e-6)
    assert math.isnan(result["accuracy"]) or 0 <= result["accuracy"] <= 1


def test_eval_reward_prints_the_accuracy_with_its_interval(reward_dir, tmp_path, capsys):
    import shutil

    from app.cli import main

    home = tmp_path / "home"
    shutil.copytree(reward_dir, home / "models" / "rm")
    pairs = write_pairs(tmp_path / "pairs.jsonl", [("What is 2 + 2?", "4", "5"), ("Name a fruit.", "An apple.", "A chair.")])
    assert main(["eval-reward", "--home", str(home), "--reward", "rm", str(pairs)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"rm on {pairs}: pairs 2, accuracy ") and "[95% CI " in line
    assert main(["eval-reward", "--home", str(home), "--reward", "rm", "--json", str(pairs)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pairs"] == 2 and {"accuracy_low", "accuracy_high"} <= set(result)
