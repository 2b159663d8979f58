"""`rlhf export --format hf`: a dataset folder that `datasets.load_dataset` reads by subset
name, whose card `huggingface_hub` parses, and whose pairs and unpaired rows train TRL's
DPOTrainer and KTOTrainer one step each with no conversion (the tiny random Llama: same
tokenizer and chat template as the default model; the weights do not matter)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf.collect import hf_dataset
from rlhf.collect.hf_dataset import HFExportSettings
from rlhf.collect.workbench import Workbench, WorkbenchError
from rlhf.modeling.generate import SamplingParams
from storage import feedback
from helpers import one_step_config, small_lora

try:  # `python -m pytest` from the repository root puts the root on sys.path
    from tests.conftest import make_home
except ImportError:  # a bare `pytest` puts tests/ on it (rootdir conftest, no __init__.py)
    from conftest import make_home

HOSTILE = "---\nlicense: mit\n---\n<script>alert(1)</script> | `x` ]]"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    """Two comparisons of K=3, the first ranked by two annotators (one of them with a
    hostile name), the second by one, exported as a dataset folder."""
    root = tmp_path_factory.mktemp("hf")
    home = make_home(root / "h", tiny_model_dir)
    with Workbench(home) as wb:
        created = wb.generate(n=2, k=3, params=SamplingParams(max_new_tokens=24, seed=0))
        wb.rank(created[0], "A > B > C", user="alice")
        wb.rank(created[0], "B > A > C", user=HOSTILE)
        wb.rank(created[1], "C > A = B", user="alice")
        done = hf_dataset.export(wb, root / "dataset", HFExportSettings(license="cc-by-4.0"))
        rankings = wb.rankings()
    return {"path": done.path, "rows": done.rows, "rankings": rankings, "home": home, "root": root}


def _load(path, name, tmp_path):
    from datasets import load_dataset

    return load_dataset(str(path), name, split="train", cache_dir=str(tmp_path / "cache"))


def test_each_subset_loads_by_name_with_the_rows_of_the_rankings(exported, tmp_path):
    # pairs: 3 from each strict order of 3, 2 from 'C > A = B'; unpaired: top and bottom of
    # each ranking (1 + 1, 1 + 1, 1 + 2)
    assert exported["rows"] == {"preference": 3 + 3 + 2, "unpaired": 2 + 2 + 3, "rankings": 3}
    pairs = _load(exported["path"], "preference", tmp_path)
    assert set(pairs.column_names) == {"prompt", "chosen", "rejected", "margin"}
    assert len(pairs) == 8 and sorted(pairs["margin"]) == [1.0] * 6 + [2.0] * 2
    unpaired = _load(exported["path"], "unpaired", tmp_path)
    assert set(unpaired.column_names) == {"prompt", "completion", "label"}
    assert sorted(unpaired["label"]) == [False] * 4 + [True] * 3
    raw = _load(exported["path"], "rankings", tmp_path)
    assert raw["ranking"] == ["A > B > C", "B > A > C", "C > A = B"]
    assert raw["completions"][0] == list(exported["rankings"]["completions"][0])
    # annotators by their first ranking, names left out
    assert raw["annotator"] == ["annotator-1", "annotator-2", "annotator-1"]
    assert "user" not in raw.column_names
    # the default config is the preference pairs
    from datasets import load_dataset

    default = load_dataset(str(exported["path"]), split="train", cache_dir=str(tmp_path / "cache"))
    assert set(default.column_names) == {"prompt", "chosen", "rejected", "margin"}


def test_the_card_declares_licence_sizes_features_and_how_it_was_collected(exported):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exported["path"] / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["size_categories"] == ["n<1K"]
    infos = {info["config_name"]: info for info in data["dataset_info"]}
    assert infos["preference"]["splits"] == [{"name": "train", "num_examples": 8}]
    assert {f["name"] for f in infos["unpaired"]["features"]} == {"prompt", "completion", "label"}
    collected = data["collection"]
    assert (collected["rankings"], collected["comparisons"], collected["annotators"]) == (3, 2, 2)
    # one comparison shared: A > B > C against B > A > C agree on 2 of 3 pairs, tau-b 1/3
    assert collected["agreement"]["comparisons_with_overlap"] == 1
    assert collected["agreement"]["pairwise_agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert collected["agreement"]["kendall_tau_b"] == pytest.approx(1 / 3, abs=1e-4)
    assert "pairwise agreement 0.667" in card.text


def test_no_name_or_model_text_reaches_the_card(exported):
    text = (exported["path"] / "README.md").read_text()
    assert "alice" not in text and "script" not in text and "alert" not in text
    for completions in exported["rankings"]["completions"]:
        for completion in completions:
            assert completion.strip()[:30] not in text
    assert text.count("\n---\n") == 1  # the YAML header ends once: nothing opened another


def test_names_are_kept_when_asked_and_bad_settings_are_refused(exported, tmp_path):
    with Workbench(exported["home"]) as wb:
        done = hf_dataset.export(wb, tmp_path / "named", HFExportSettings(license="other", annotator_names=True))
        assert _load(done.path, "rankings", tmp_path)["annotator"] == ["alice", HOSTILE, "alice"]
        with pytest.raises(WorkbenchError, match="Hub licence id"):
            hf_dataset.export(wb, tmp_path / "bad", HFExportSettings(license="MIT\n---"))
        with pytest.raises(WorkbenchError, match="not an empty folder"):
            hf_dataset.export(wb, exported["path"], HFExportSettings())
    assert not (tmp_path / "bad").exists()


def test_an_annotators_good_mark_labels_a_middle_completion(exported, tmp_path):
    # alice's 'A > B > C' on the first comparison gives B no label; her mark makes it desirable
    first = exported["rankings"].iloc[0]
    with Workbench(exported["home"]) as wb:
        with wb.store.transaction() as cur:
            feedback.add_labels(cur, int(first["ranking_id"]), int(first["comparison_id"]), {"B": {"good": True}})
        done = hf_dataset.export(wb, tmp_path / "marked", HFExportSettings(license="other"))
        with wb.store.transaction() as cur:  # the module's other tests see the store as it was
            cur.execute("DELETE FROM completion_labels")
    unpaired = _load(done.path, "unpaired", tmp_path)
    assert done.rows["unpaired"] == exported["rows"]["unpaired"] + 1
    middle = first["completions"][1]
    # B's rows: the other annotator's 'B > A > C' (top group) and now alice's mark
    assert [row["label"] for row in unpaired if row["completion"][0]["content"] == middle] == [True, True]


@pytest.mark.parametrize("subset", ["preference", "unpaired"])
def test_the_subset_trains_one_trl_step_as_loaded(subset, exported, tiny_model_dir, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    trainer_class, config_class = (DPOTrainer, DPOConfig) if subset == "preference" else (KTOTrainer, KTOConfig)
    dataset = _load(exported["path"], subset, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = trainer_class(model=model, args=one_step_config(config_class, tmp_path / subset),
                            train_dataset=dataset, processing_class=tokenizer, peft_config=small_lora())
    assert len(trainer.train_dataset) == len(dataset)
    trainer.train()
    assert trainer.state.global_step == 1
    assert [e["loss"] for e in trainer.state.log_history if math.isfinite(e.get("loss", math.nan))]


def test_the_command_needs_a_licence_and_says_where_it_wrote(exported, tmp_path, capsys):
    from app.cli import main

    home = str(exported["home"].root)
    assert main(["export", "--home", home, "--format", "hf", str(tmp_path / "a")]) == 1
    assert "needs --license" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["export", "--home", home, "--format", "preference", "--license", "mit", str(tmp_path / "p.jsonl")]) == 1
    assert "go with --format hf" in capsys.readouterr().err
    assert main(["export", "--home", home, "--format", "hf", "--license", "mit", "--json", str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(tmp_path / "a"), "rows": exported["rows"], "format": "hf"}
