"""The reward-model trainer: every loss and grouping on the tiny random Llama (seconds
each), the refusals, and one integration test on the real SmolLM2 that must learn a hidden
preference from rankings made up here."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf.preference.messages import plain
from rlhf.modeling.scoring import RewardScorer, score_ids
from rlhf.train import common
from rlhf import errors
from rlhf.modeling import loading
from rlhf.train.methods import resolve
from rlhf.train.reward import (
    RankedCollator,
    full_weights,
    load_classifier,
    ranked_items,
    train,
    training_examples,
)


def ranking_row(n: int, comparison: int, completions: list[str], ranking: str, user: str = "ann",
                prompt: str | None = None) -> dict:
    return {"ranking_id": n, "comparison_id": comparison,
            "prompt": [{"role": "user", "content": prompt or f"Question number {comparison}?"}],
            "completions": completions, "ranking": ranking, "user": user,
            "model_versions": ["base"] * len(completions)}


def small_rankings() -> pd.DataFrame:
    """Ten rankings of 2 to 4 completions, with ties, two annotators on comparison 0."""
    rows = [
        ranking_row(0, 0, ["Yes.", "No.", "Maybe so.", "Ask again."], "C > B = D > A"),
        ranking_row(1, 0, ["Yes.", "No.", "Maybe so.", "Ask again."], "A > C > B = D", user="other"),
        ranking_row(2, 1, ["Red.", "Blue."], "B > A"),
        ranking_row(3, 2, ["One", "Two", "Three"], "A = B > C"),
        ranking_row(4, 3, ["Up", "Down", "Left"], "C > A > B"),
        ranking_row(5, 4, ["Cat", "Dog"], "A = B"),
        ranking_row(6, 5, ["Tea", "Coffee", "Water", "Milk"], "D > A > B > C"),
        ranking_row(7, 6, ["Sun", "Moon"], "A > B"),
        ranking_row(8, 7, ["North", "South", "East"], "B > A = C"),
        ranking_row(9, 8, ["Hot", "Cold"], "B > A"),
    ]
    return pd.DataFrame(rows)


def parquet_round_trip(frame: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """What the worker reads: prompts come back as numpy arrays of dicts."""
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    return pd.read_parquet(path)


def settings(**overrides) -> tuple[dict, dict]:
    return resolve("reward", {"max_steps": 2, "per_device_train_batch_size": 4, "eval_fraction": 0.2, **overrides})


def run(frame: pd.DataFrame, base: Path, out: Path, reporter: common.Reporter | None = None, **overrides) -> dict:
    config, options = settings(**overrides)
    return train(common.TrainInputs(frame, base, out, config, options, reporter=reporter or common.Reporter()))


def distinct_completions(frame: pd.DataFrame) -> tuple[list, list[str]]:
    seen = {}
    for row in frame.to_dict("records"):
        for text in plain(row["completions"]):
            seen[(json.dumps(plain(row["prompt"])), text)] = (plain(row["prompt"]), text)
    prompts, texts = zip(*seen.values())
    return list(prompts), list(texts)


@pytest.mark.parametrize("loss,grouping,use_margin", [
    ("bradley_terry", "pairs", False),
    ("bradley_terry", "ranking", True),
    ("rao_kupper", "pairs", True),
    ("rao_kupper", "ranking", False),
    ("davidson", "pairs", False),
    ("davidson", "ranking", True),
])
def test_each_loss_and_grouping_trains_and_writes_a_normalised_reward_model(
        tiny_model_dir, tmp_path, loss, grouping, use_margin):
    frame = parquet_round_trip(small_rankings(), tmp_path)
    reporter = common.Reporter()
    out = tmp_path / "model"
    metrics = run(frame, tiny_model_dir, out, reporter, loss=loss, grouping=grouping, use_margin=use_margin)

    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert metrics["train/pairs"] > 0 and metrics["eval/rankings"] >= 1
    assert 0 <= metrics["eval/accuracy"] <= 1 and metrics["eval/pairs"] >= 1
    tie_aware = loss != "bradley_terry"
    assert (metrics["train/tied_pairs"] > 0) == tie_aware
    assert ("theta" in metrics) == (loss == "rao_kupper") and ("nu" in metrics) == (loss == "davidson")
    assert reporter.history and reporter.history[-1]["reward_offset"] == metrics["reward_offset"]

    info = json.loads((out / "reward.json").read_text())
    assert info["offset"] == metrics["reward_offset"] and info["loss"] == loss and info["grouping"] == grouping
    assert (info["tie_parameter"] is not None) == tie_aware
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not loading.is_adapter(out) and not common.scratch_dir(out).exists()
    model = loading.load_reward_model(out)
    assert model.config.num_labels == 1 and model.config.architectures == ["LlamaForSequenceClassification"]

    # Normalised: mean 0 over the distinct completions of the snapshot.
    prompts, texts = distinct_completions(frame)
    assert len(texts) == info["completions_for_offset"]
    scores = RewardScorer(out).score(prompts, texts)
    assert abs(sum(scores) / len(scores)) < 1e-4


def test_held_out_tied_pairs_are_scored_with_a_tie_aware_loss(tiny_model_dir, tmp_path):
    # eval_fraction 0.5 of nine comparisons holds out four or five of them; with the fixed
    # seed the held-out share includes a tie (checked, so that the test means something).
    metrics = run(small_rankings(), tiny_model_dir, tmp_path / "model", loss="davidson", eval_fraction=0.5,
                  tie_param=3.0)
    assert metrics["eval/tied_pairs"] >= 1
    assert 0 <= metrics["eval/tie_accuracy"] <= 1
    assert metrics["nu"] == pytest.approx(3.0)   # a fixed tie parameter stays fixed


def test_full_ties_refuse_bradley_terry_and_train_a_tie_aware_loss(tiny_model_dir, tmp_path):
    frame = pd.DataFrame([ranking_row(i, i, ["Same", "Also same", "Equal"], "A = B = C") for i in range(4)])
    with pytest.raises(errors.TrainingError, match="full tie.*rao_kupper or loss=davidson"):
        run(frame, tiny_model_dir, tmp_path / "bt")
    assert not (tmp_path / "bt" / "reward.json").exists()
    metrics = run(frame, tiny_model_dir, tmp_path / "rk", loss="rao_kupper")
    assert metrics["train/pairs"] == 0 and metrics["train/tied_pairs"] > 0
    assert (tmp_path / "rk" / "reward.json").is_file()


def test_no_rankings_bad_settings_and_bad_rankings_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(errors.TrainingError, match="no rankings"):
        run(small_rankings().iloc[0:0], tiny_model_dir, tmp_path / "empty")
    with pytest.raises(errors.TrainingError, match="soft prompt"):
        run(small_rankings(), tiny_model_dir, tmp_path / "prompt", adapter="prompt")
    with pytest.raises(errors.TrainingError, match="theta.*greater than 1"):
        run(small_rankings(), tiny_model_dir, tmp_path / "theta", loss="rao_kupper", tie_param=0.5)
    bad = pd.DataFrame([ranking_row(0, 0, ["x", "y"], "A > C"), ranking_row(1, 1, ["x", "y"], "A > B")])
    with pytest.raises(errors.TrainingError, match="'A > C' is invalid"):
        run(bad, tiny_model_dir, tmp_path / "bad", eval_fraction=0.0)


def test_full_fine_tuning_changes_the_backbone(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "model"
    run(small_rankings(), tiny_model_dir, out, adapter="full", learning_rate=1e-2)
    trained = load_file(out / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(trained[name], base[name])


def test_a_lora_policy_is_merged_before_the_reward_head_is_added(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(loading.load_causal_lm(tiny_model_dir),
                            LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear", init_lora_weights=False))
    adapter_dir = tmp_path / "policy"
    loading.save_model(policy, loading.load_tokenizer(tiny_model_dir), adapter_dir, tiny_model_dir, merge=False)
    assert loading.is_adapter(adapter_dir)

    out = tmp_path / "model"
    run(small_rankings(), adapter_dir, out)
    assert RewardScorer(out).score([[{"role": "user", "content": "Hi"}]], ["Hello."])
    # Only the model and its reward.json remain next to the job's other outputs.
    assert not list(tmp_path.glob(".reward-base-*"))


def test_cancel_stops_before_anything_is_written(tiny_model_dir, tmp_path):
    reporter = common.Reporter()
    reporter.cancel_requested = True
    with pytest.raises(common.Cancelled):
        run(small_rankings(), tiny_model_dir, tmp_path / "model", reporter, max_steps=5)
    assert not (tmp_path / "model" / "reward.json").exists()


def test_examples_and_collator_weight_each_ranking_once(tiny_model_dir):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    frame = pd.DataFrame([ranking_row(0, 0, ["a", "b", "c", "d"], "A > B > C > D"),
                          ranking_row(1, 1, ["e", "f"], "B > A"),
                          ranking_row(2, 2, ["g", "h", "i"], "A = B > C")])
    items = ranked_items(frame, tokenizer)

    by_ranking, _ = training_examples(items, "ranking", keep_ties=False, max_length=None)
    assert [len(e["completion_ids"]) for e in by_ranking] == [4, 2, 3]
    by_pair, _ = training_examples(items, "pairs", keep_ties=True, max_length=None)
    assert len(by_pair) == 6 + 1 + 3 and all(len(e["completion_ids"]) == 2 for e in by_pair)

    batch = RankedCollator(tokenizer.pad_token_id, keep_ties=False)(by_ranking)
    assert batch["input_ids"].shape[0] == 9 and batch["attention_mask"].sum(1).min() > 0
    # 6 + 1 + 2 strict pairs; each ranking's pairs share 1/3 of the weight.
    weights = batch["pair_weight"].tolist()
    assert weights == pytest.approx([1 / 18] * 6 + [1 / 3] + [1 / 6] * 2)
    assert batch["pair_margin"].tolist()[:6] == [1, 2, 3, 1, 2, 1] and not batch["pair_tie"].any()
    assert batch["pair_first"].tolist()[6:] == [5, 6, 7] and batch["pair_second"].tolist()[6:] == [4, 8, 8]


def test_a_completion_longer_than_max_length_leaves_its_ranking_and_the_rest_stays(tiny_model_dir, tmp_path):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    frame = pd.DataFrame([ranking_row(0, 0, ["Short.", "word " * 80, "Also short."], "A > B > C")])
    items = ranked_items(frame, tokenizer)
    limit = max(len(items[0].ids[0]), len(items[0].ids[2]))
    assert len(items[0].ids[1]) > limit
    kept, dropped = training_examples(items, "ranking", keep_ties=False, max_length=limit)
    assert dropped == 1 and kept == [{"completion_ids": [items[0].ids[0], items[0].ids[2]], "ranks": [1, 3]}]
    pairs, dropped = training_examples(items, "pairs", keep_ties=False, max_length=limit)
    assert dropped == 1 and [p["ranks"] for p in pairs] == [[1, 3]]   # margin 2 is kept
    with pytest.raises(errors.TrainingError, match="raise max_length"):
        run(frame, tiny_model_dir, tmp_path / "model", max_length=5, eval_fraction=0.0)


def test_qlora_style_merge_through_a_full_precision_copy_matches_an_in_place_merge(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_classifier(tiny_model_dir),
                           LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear", init_lora_weights=False))
    model.config.pad_token_id = 0
    ids = [[1, 5, 9, 13, 2], [1, 7, 2]]
    # The reload path rebuilds the base from disk (as after 4-bit training), then merges.
    reloaded = full_weights(model, tiny_model_dir, quantized=True, scratch_near=tmp_path)
    merged = full_weights(model, tiny_model_dir, quantized=False, scratch_near=tmp_path)
    assert score_ids(reloaded, ids, 0) == pytest.approx(score_ids(merged, ids, 0), abs=1e-5)
    assert not list(tmp_path.glob(".reward-base-*"))


# -- integration: the real SmolLM2 learns a hidden preference ----------------------------------

TOPICS = ["the ocean", "volcanoes", "bread", "chess", "the moon", "bicycles", "tea", "rainforests", "jazz",
          "honeybees", "glaciers", "penguins", "solar panels", "origami", "deserts", "lighthouses", "coffee",
          "trains", "castles", "owls"]
OPENINGS = ["Here is a short note on {}.", "A few words about {}.", "Let me tell you about {}.",
            "Some facts on {}.", "{} is a fine subject.", "About {}: quite a story."]
PREFERRED, PLAIN = "Hope this helps!", "That is all."


def hidden_preference_rankings(n: int, seed: int) -> pd.DataFrame:
    """Rankings of 2 to 4 completions where annotators (secretly) prefer the completions
    that end with "Hope this helps!" over those ending "That is all.", ties within a class."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.choice([2, 3, 4])
        topic = rng.choice(TOPICS)
        preferred = [rng.random() < 0.5 for _ in range(k)]
        if len(set(preferred)) == 1:
            preferred[rng.randrange(k)] = not preferred[0]
        completions = [f"{rng.choice(OPENINGS).format(topic).capitalize()} {PREFERRED if p else PLAIN}"
                       for p in preferred]
        letters = "ABCD"[:k]
        groups = [" = ".join(x for x, p in zip(letters, preferred) if p == side) for side in (True, False)]
        rows.append(ranking_row(i, i, completions, " > ".join(groups), prompt=f"Tell me about {topic}.", user="sim"))
    frame = pd.DataFrame(rows)
    # A short system turn instead of the chat template's default one: shorter sequences.
    frame["prompt"] = [[{"role": "system", "content": "Be brief."}, *p] for p in frame["prompt"]]
    return frame


TOP_LAYERS = r".*layers\.(2[6-9])\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"


@pytest.mark.integration
def test_real_model_learns_a_hidden_preference(real_model_dir, tmp_path, one_thread):
    # Well under a minute on two busy CPU cores: 36 training rankings, each ranking one batch
    # element, LoRA on the top four of the 30 layers only (no backward pass below them).
    frame = hidden_preference_rankings(48, seed=0)
    started = time.monotonic()
    out = tmp_path / "model"
    metrics = run(frame, real_model_dir, out, grouping="ranking", eval_fraction=0.25, learning_rate=1e-3,
                  per_device_train_batch_size=4, max_steps=-1, num_train_epochs=1, lora_target=TOP_LAYERS)
    elapsed = time.monotonic() - started
    assert metrics["eval/pairs"] >= 15
    assert metrics["eval/accuracy"] >= 0.75, metrics
    scorer = RewardScorer(out)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about kites."}]
    good, plain = scorer.score([prompt, prompt], [f"Kites are fun. {PREFERRED}", f"Kites are fun. {PLAIN}"])
    assert good > plain
    print(f"trained and evaluated in {elapsed:.0f} s: {metrics}")


@pytest.mark.parametrize("available, decided", [(1, "recomputed"), (2**50, "kept")])
def test_activations_are_recomputed_only_where_they_would_not_fit(tiny_model_dir, tmp_path, monkeypatch, caplog,
                                                                   available, decided):
    from rlhf.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    frame = parquet_round_trip(small_rankings(), tmp_path)
    with caplog.at_level(logging.INFO, logger="rlhf.train.common"):
        metrics = run(frame, tiny_model_dir, tmp_path / "model", max_steps=2)
    assert math.isfinite(metrics["train_loss"]) and (tmp_path / "model" / "reward.json").is_file()
    [line] = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Memory: ")]
    assert decided in line


def test_a_chosen_activation_checkpointing_is_left_alone(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from rlhf.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 1)
    with caplog.at_level(logging.INFO, logger="rlhf.train.common"):
        run(parquet_round_trip(small_rankings(), tmp_path), tiny_model_dir, tmp_path / "model", max_steps=1,
            activation_checkpointing=False)
    assert not [record for record in caplog.records if record.getMessage().startswith("Memory: ")]
