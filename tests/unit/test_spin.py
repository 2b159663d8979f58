"""SPIN's pure parts: the self-play pairs (human answer chosen, the policy's own rejected,
none where the policy wrote the human answer), the iterations' steps one after another in
the job's metrics, and its settings (a dataclass with help, the method's options)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from rlhf.train import spin
from rlhf.train.common import Reporter
from rlhf.train.methods import METHODS


def test_the_policys_own_answer_is_rejected_and_a_copy_of_the_human_answer_dropped():
    frame = spin.human_answers(pd.DataFrame([
        {"prompt": "Hi?", "completion": [{"role": "assistant", "content": "Hello there."}], "comparison_id": 1},
        {"prompt": "Sum?", "completion": [{"role": "assistant", "content": "4"}], "comparison_id": 2},
        {"prompt": "Blank?", "completion": [{"role": "assistant", "content": "  "}], "comparison_id": 3},
    ]))
    assert list(frame["comparison_id"]) == [1, 2]  # no human answer, no row
    pairs = spin.self_play_pairs(frame, ["Hi.", " 4 "])
    assert len(pairs) == 1 and pairs.loc[0, "prompt"] == [{"role": "user", "content": "Hi?"}]
    assert pairs.loc[0, "chosen"] == [{"role": "assistant", "content": "Hello there."}]
    assert pairs.loc[0, "rejected"] == [{"role": "assistant", "content": "Hi."}]


def test_an_iterations_steps_follow_the_earlier_ones_and_it_stops_with_the_job():
    job = Reporter()
    job.progress(10, 10)
    second = spin.IterationReporter(job, offset=job.step, iterations_left=2)
    second.metrics(3, {"loss": 0.5})
    second.progress(3, 10)
    assert job.history == [{"step": 13, "loss": 0.5}] and (job.step, job.total) == (13, 30)
    job.cancel_requested = True
    assert second.cancel_requested  # the worker's SIGTERM reaches the iteration's trainer


def test_the_settings_are_a_dataclass_with_help_and_the_methods_options():
    fields = dataclasses.fields(spin.SpinSettings)
    assert all(f.metadata["help"] for f in fields)
    options = METHODS["spin"].options
    assert {f.name: f.default for f in fields}.items() <= {k: o.default for k, o in options.items()}.items()
    assert options["sft_source"] is METHODS["sft"].options["sft_source"]  # the human answers are SFT's
    assert spin.SpinSettings.from_options({"iterations": 3, "adapter": "lora"}).iterations == 3
