"""What runs in a second process: the server's sampler child (an evaluation measured there
as here, the pre-generator sampling and scoring through it), and the store's lock as another
process meets it (a plain `python`, and `rlhf compare` while a server holds the home).
Moved out of tests/unit, which starts no process; each child imports torch afresh (seconds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from rlhf.collect.pregenerate import PreGenerator
from rlhf.collect.suggestions import suggested_ranking
from rlhf.collect.workbench import Workbench
from rlhf.compare import evaluate
from rlhf.errors import ModelLoadError
from rlhf.collect.sampler_process import SamplerProcess
from rlhf.modeling.sampling import SamplingParams
from storage import evaluations, prompts, scores
from storage.db import Store

from helpers import ANA, RESEARCHER, add_comparisons, rank_everything, register, rows, wait_for

ROOT = Path(__file__).resolve().parents[2]
RLHF = Path(sys.executable).with_name("rlhf")
TINY = dict(n=3, max_new_tokens=6)


@pytest.fixture(scope="module")
def home(evaluation_home):
    return evaluation_home


# -- the sampler child ----------------------------------------------------------------------


def test_the_servers_sampler_process_measures_what_this_process_measures(home):
    """The server hands evaluations to its sampler child: same seed, same figures; the
    evaluation is still stored by the caller, and a refusal comes back as itself."""
    sampler = SamplerProcess()
    try:
        with Workbench(home) as wb:
            here = evaluate.evaluate(wb, "copy", "other", "default", reward_version="rm", cache=evaluate.ModelCache(),
                                     store=False, **TINY)
            there = evaluate.evaluate(wb, "copy", "other", "default", reward_version="rm",
                                      measurer=sampler.evaluate, created_by="rita", **TINY)
            assert evaluations.get(wb.store.cursor(), there["id"])["created_by"] == "rita"
            chosen = evaluate.plan(wb, "copy", "other", "default", "rm", 3)
        with pytest.raises(ModelLoadError, match="Could not load a model from"):
            sampler.evaluate(replace(chosen, reference_path=home.root / "missing"), SamplingParams(max_new_tokens=2))
    finally:
        sampler.close()
    for key in ("win_rate", "mean_reward_a", "mean_reward_b", "mean_length_a", "kl_b"):
        assert there[key] == pytest.approx(here[key], abs=1e-4), key


def test_pregenerator_fills_the_queue_then_reports_exhausted(annotation, workbench):
    tiny_set = [[{"role": "user", "content": f"Say {word}."}] for word in ("one", "two", "three")]
    with workbench.store.transaction() as cur:
        prompts.add_prompts(cur, "tiny", tiny_set, source="test")
    annotation.set_config(RESEARCHER, prompt_sets=["tiny"], ready_target=2, k=2, max_new_tokens=4)
    generator = PreGenerator(annotation, interval_s=0.05)
    generator.start()
    try:
        wait_for(lambda: generator.status()["ready"] >= 2 and generator.status()["state"] == "idle")
        status = generator.status()
        assert status["target"] == 2 and status["generated_total"] == 2 and status["last_error"] is None
        made = rows(workbench, "SELECT c.id, c.k FROM comparisons c JOIN prompts p ON p.id = c.prompt_id"
                               " WHERE p.prompt_set = 'tiny'")
        assert len(made) == 2 and all(k == 2 for _, k in made)

        rank_everything(annotation, ANA, "A > B")  # uses up the ready items; one prompt is left
        wait_for(lambda: generator.status()["state"] == "exhausted")
        assert generator.status()["generated_total"] == 3
        assert rows(workbench, "SELECT count(*) FROM comparisons")[0][0] == 3
    finally:
        generator.stop()
    assert not generator.is_alive()


def test_the_pregenerator_scores_the_queue_in_its_child_process(annotation, workbench, tiny_reward_dir):
    from rlhf.modeling.scoring import RewardScorer

    shutil.copytree(tiny_reward_dir, workbench.home.root / "models" / "rm")
    register(workbench, "rm", "reward", path="models/rm")
    made = add_comparisons(workbench, 3, k=3)
    generator = PreGenerator(annotation, score_batch=2)
    try:
        assert generator.score_once() is False  # suggestions and 'uncertain' off: nothing to score
        annotation.set_config(RESEARCHER, suggest=True, ready_target=0)
        assert generator.score_once() is True and generator.score_once() is True  # 2 + 1 comparisons
        assert generator.score_once() is False
        status = generator.status()
        assert status["scored_total"] == 3 and status["score_error"] is None
    finally:
        generator.stop()

    stored = scores.scores_frame(workbench.store.cursor(), "rm")
    assert len(stored) == 9 and sorted(stored["comparison_id"].unique()) == made
    scorer = RewardScorer(workbench.home.root / "models" / "rm")
    first = workbench.comparison(made[0])
    expected = scorer.score([first.messages] * 3, [c["text"] for c in first.completions])
    assert stored[stored["comparison_id"] == made[0]]["score"].tolist() == pytest.approx(expected, abs=1e-4)
    assert rows(workbench, "SELECT ranking FROM suggestions WHERE comparison_id = ?", [made[0]]) == [
        (suggested_ranking(expected),)]
    assert annotation.next_item(ANA).suggestion["ranking"] == suggested_ranking(expected)


# -- the store's lock from another process ---------------------------------------------------


def test_second_process_gets_a_plain_locked_error_naming_the_holder(tmp_path):
    db_path = tmp_path / "workbench.duckdb"
    code = (
        "import sys\n"
        "from storage.db import Store, StoreLockedError\n"
        "try:\n"
        f"    Store({str(db_path)!r})\n"
        "except StoreLockedError as error:\n"
        "    print(type(error).__name__, error.pid)\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
    )
    with Store(db_path):  # this process holds the lock
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 3, result.stderr
    kind, pid = result.stdout.splitlines()[0].split()
    assert kind == "StoreLockedError"
    assert int(pid) == os.getpid()
    message = result.stdout.splitlines()[1]
    assert f"(PID {os.getpid()})" in message
    assert str(db_path) in message
    assert "IO Error" not in message and "Traceback" not in message and "duckdb.org" not in message
    assert "Traceback" not in result.stderr


def test_rlhf_compare_refuses_while_a_server_holds_the_store(home):
    with Workbench(home):  # this process holds the lock, as a server would
        home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9999"}))
        try:
            result = subprocess.run([str(RLHF), "compare", "base", "copy", "--home", str(home.root)],
                                    capture_output=True, text=True, timeout=120)
        finally:
            home.server_file.unlink()
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlhf: A workbench server"), result.stderr
    assert "http://127.0.0.1:9999" in lines[0] and "Traceback" not in result.stderr
