"""Integration tests on the real default model (SmolLM2-135M-Instruct): generation
through the workbench and sensible greedy answers. (That exports feed TRL's trainers is
a question of formats, asked on the tiny model in test_export_trl.py.)"""

from __future__ import annotations

import json
import re

import pytest

from rlhf.modeling import precision
from rlhf.modeling.generate import SamplingParams, sample
from rlhf.home import BASE_VERSION
from rlhf.modeling.models import load_policy
from rlhf.collect.workbench import Workbench

try:  # `python -m pytest` from the repository root puts the root on sys.path
    from tests.conftest import make_home
except ImportError:  # a bare `pytest` puts tests/ on it (rootdir conftest, no __init__.py)
    from conftest import make_home

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _englishish(text: str) -> bool:
    """Mostly letters and spaces, with a few common English words."""
    letters = sum(ch.isascii() and (ch.isalpha() or ch.isspace()) for ch in text)
    words = set(re.findall(r"[a-z']+", text.lower()))
    common = {"the", "a", "an", "to", "and", "of", "is", "you", "your", "i", "it", "in", "for", "can", "be", "that",
              "this", "are", "with", "on", "as", "or", "here", "some", "if", "my", "what", "how"}
    return letters >= 0.7 * len(text) and bool(words & common)


def test_workbench_generates_with_the_real_model(tmp_path, real_model_dir):
    home = make_home(tmp_path / "h", real_model_dir)
    params = SamplingParams(max_new_tokens=32, seed=0)
    with Workbench(home) as wb:
        created = wb.generate(n=2, k=4, params=params)
        assert len(created) == 2
        stored = wb.comparisons()
        assert sorted(stored["id"]) == sorted(created)
        completions = [c for cid in created for c in wb.comparison(cid).completions]
        assert len(completions) == 8
        for cid in created:
            comparison = wb.comparison(cid)
            assert comparison.k == 4
            assert [c["letter"] for c in comparison.completions] == ["A", "B", "C", "D"]
        for completion in completions:
            assert completion["model_version"] == BASE_VERSION
            assert completion["text"].strip(), completion
            assert _englishish(completion["text"]), completion["text"]
            assert 1 <= completion["num_tokens"] <= 32
            assert completion["finish_reason"] in ("eos", "length")
            assert json.loads(completion["sampling"]) == {**params.as_dict(), "dtype": precision.current().dtype}
        # sampling at temperature 0.8: the four completions of a prompt are not all identical
        for cid in created:
            assert len({c["text"] for c in wb.comparison(cid).completions}) > 1


def test_real_model_answers_a_factual_question(real_model_dir):
    policy = load_policy(real_model_dir)
    [[answer, twin]] = sample(policy, [FRANCE], k=2, params=SamplingParams(temperature=0, max_new_tokens=24))
    assert "Paris" in answer.text, answer
    assert answer == twin
    assert answer.finish_reason == "eos"  # a short answer ends by itself
    assert answer.num_tokens < 24


BATCH_PROMPTS = [
    FRANCE,
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Write a long poem about the sea, the sky and the wind over the hills, please."}],
    [{"role": "user", "content": "Name three colours."}],
]


def test_real_model_batching_keeps_greedy_answers(real_model_dir, monkeypatch):
    """Left padding is right: prompts of different lengths batched together get exactly
    what each gets alone. In fp32: in bf16 a padded batch's sums round differently from a
    lone prompt's, so a near-tie between two tokens can go either way (seen on an AMX CPU)."""
    monkeypatch.setenv("RLHF_PRECISION", "fp32")
    policy = load_policy(real_model_dir)
    params = SamplingParams(temperature=0, max_new_tokens=16)
    alone = sample(policy, BATCH_PROMPTS, k=2, params=params, batch_prompts=1)
    batched = sample(policy, BATCH_PROMPTS, k=2, params=params, batch_prompts=4)
    assert batched == alone
    assert "Paris" in batched[0][0].text
