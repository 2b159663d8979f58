"""HH-RLHF pairs in a throw-away home (`rlhf.bench.hh`), the one way the `reward_head`,
`adapters` and `spin` benchmarks set up: the subset drawn, the home made and named for the
benchmark, the pairs imported, each job run there, the home removed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from conftest import placeholder_model_dir
from helpers import rows
from rlhf.bench import hh
from rlhf.collect.workbench import Workbench
from rlhf.home import Home


def hh_file(path: Path, lengths: list[int]) -> Path:
    """HH-RLHF lines (the dataset's own layout), the i-th with a human turn of `lengths[i]` characters."""
    lines = []
    for i, length in enumerate(lengths):
        question = (f"q{i} " + "x" * length)[:length]
        lines.append(json.dumps({"chosen": f"\n\nHuman: {question}\n\nAssistant: a good answer {i}",
                                 "rejected": f"\n\nHuman: {question}\n\nAssistant: a bad answer {i}"}))
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


def test_sample_pairs_draws_seeded_and_within_the_length(tmp_path):
    data = hh_file(tmp_path / "hh.jsonl", [10, 20, 400, 30, 500, 40])
    first, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert hh.sample_pairs(data, 3, 100, 7, first) == 3
    assert hh.sample_pairs(data, 3, 100, 7, again) == 3
    drawn = first.read_text(encoding="utf-8").splitlines()
    assert drawn == again.read_text(encoding="utf-8").splitlines()
    assert all(max(len(v) for v in json.loads(line).values()) <= 100 for line in drawn)
    assert hh.sample_pairs(data, 10, 0, 7, first) == 6  # 0: any length; no more than the file holds


def test_hh_home_imports_the_pairs_into_a_home_of_its_own_and_removes_it(tmp_path):
    model = placeholder_model_dir(tmp_path / "model")
    data = hh_file(tmp_path / "hh.jsonl", [10, 20, 30, 40])
    with hh.hh_home(model, data, 3, 0, 0, "test-hh") as one, hh.hh_home(model, data, 2, 0, 0, "test-hh") as two:
        assert one.root != two.root
        for home in (one, two):
            assert home.root.parent == Path(tempfile.gettempdir()) and home.root.name.startswith("rlhf-bench-test-hh-")
        assert (one.pairs, one.imported, two.pairs, two.imported) == (3, 3, 2, 2)
        with Workbench(Home(one.root)) as wb:
            frame = wb.rankings()
            assert len(frame) == 3
            assert rows(wb, "SELECT count(*) FROM prompts WHERE prompt_set = 'hh'") == [(3,)]
    assert not one.root.exists() and not two.root.exists()


def test_hh_home_is_removed_when_the_benchmark_fails(tmp_path):
    model = placeholder_model_dir(tmp_path / "model")
    data = hh_file(tmp_path / "hh.jsonl", [10, 20])
    with pytest.raises(RuntimeError, match="a job broke"):
        with hh.hh_home(model, data, 2, 0, 0, "test-hh") as home:
            raise RuntimeError("a job broke")
    assert not home.root.exists()


def test_run_on_hh_runs_each_job_in_the_home_and_prints_each_row(tmp_path, monkeypatch, capsys):
    model = placeholder_model_dir(tmp_path / "model")
    data = hh_file(tmp_path / "hh.jsonl", [10, 20, 30])
    seen = []

    def run_method(wb, method, settings, reward):
        seen.append((method, settings, reward, len(wb.rankings()), wb.home.root))
        return {"method": method, "status": "succeeded", "eval_margin": 0.5}

    monkeypatch.setattr(hh, "run_method", run_method)
    runs = [("dpo", {"adapter": "lora"}), ("reward", {"max_steps": 2})]
    result = hh.run_on_hh(model, data, 2, 0, 0, "test-hh", runs,
                          lambda row, settings: {"settings": settings, "margin2": row["eval_margin"] * 2})
    assert [(method, settings, reward, rankings) for method, settings, reward, rankings, _ in seen] == [
        ("dpo", {"adapter": "lora"}, None, 2), ("reward", {"max_steps": 2}, None, 2)]
    assert seen[0][4] == seen[1][4] and seen[0][4].name.startswith("rlhf-bench-test-hh-")
    assert not seen[0][4].exists()
    rows = [{"method": m, "status": "succeeded", "eval_margin": 0.5, "settings": s, "margin2": 1.0} for m, s in runs]
    assert result == {"pairs": 2, "imported": 2, "runs": rows}
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
