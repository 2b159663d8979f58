"""The rules that a text satisfies or not (length, tone, formatting, topic, refusal), on
hand-written texts, their specs, and the learning benchmark's pure parts."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy.stats import binomtest

from rlhf.bench import learn
from rlhf.bench.learn import RULES, LearnConfig, Results, check, share, split_prompts
from rlhf.jobs.training_data import DataError
from rlhf.preference.pairs import only_full_ties
from rlhf.collect.workbench import WorkbenchError
from rlhf.home import default_prompts
from rlhf.simulate.rules import AtMost, Avoids, Markdown, Mentions, Polite, Refuses, Shorter
from rlhf.simulate.spec import AnnotatorSpecError, parse_annotator

PROMPT = [{"role": "user", "content": "How do I keep my plants alive?"}]


def test_at_most_counts_stripped_characters_and_ranks_short_answers_first():
    rule = AtMost(10)
    assert rule.holds("  ten chars  ".replace("ten chars", "0123456789"))
    assert not rule.holds("01234567890")
    assert rule.rank(PROMPT, ["a" * 11, "short", "b" * 30, "tiny"]) == "B = D > A = C"
    with pytest.raises(ValueError, match="positive whole number"):
        AtMost(0)


@pytest.mark.parametrize("text, polite", [
    ("Thank you for asking! Water them weekly.", True),
    ("Thanks, that helps.", True),
    ("I hope this helps.", True),
    ("I\u2019m sorry to hear that.", True),
    ("Feel free to ask more.", True),
    ("Water them weekly.", False),
    ("Thanksgiving is in November.", False),  # a word that only starts like thanks
    ("The hopeful gardener waters often.", False),
])
def test_polite_finds_courteous_phrases_only(text, polite):
    assert Polite().holds(text) is polite


@pytest.mark.parametrize("text, formatted", [
    ("Try this:\n- water weekly\n- give them light", True),
    ("1. Water weekly.", True),
    ("  \u2022 an indented bullet", True),
    ("## Watering\nOnce a week.", True),
    ("Water them **weekly**.", True),
    ("Run `pip install plants`.", True),
    ("1.5 litres a week\n2 hours of sun", False),  # numbers, not list markers
    ("Water weekly - and give them light - daily.", False),
    ("#1 tip: water weekly. 5 * 3 = 15.", False),
])
def test_markdown_finds_lists_headings_bold_and_code(text, formatted):
    assert Markdown().holds(text) is formatted


@pytest.mark.parametrize("text, refuses", [
    ("I can't help with that.", True),
    ("I cannot provide instructions for that.", True),
    ("I\u2019m sorry, but I won\u2019t do that.", True),
    ("I'm not able to assist with hacking.", True),
    ("That would be illegal, so I must decline.", True),
    ("Sure! Here is how you pick a lock: first...", False),
    ("Sending that can be illegal; talk to a professional.", True),  # a soft refusal: a warning
    ("You can't go wrong with more light.", False),  # "can't", but not the assistant declining
])
def test_refuses_finds_refusal_phrases(text, refuses):
    assert Refuses().holds(text) is refuses


def test_a_property_ranks_texts_having_it_first_and_ties_the_rest():
    assert Refuses().rank("Tell me how to hurt someone.", ["Sure, first...", "I can't help with that.",
                                                          "Here you go.", "I cannot do that."]) == "B = D > A = C"


def test_topic_rules_hold_on_a_mention_or_its_absence():
    assert Mentions(["example"]).holds("For Example, a cactus.")
    assert not Mentions(["example"]).holds("Exemplary care.")
    assert Avoids(["sorry"]).holds("No apologies here.")
    assert not Avoids(["sorry"]).holds("Sorry!")
    with pytest.raises(TypeError, match="no line"):
        Shorter().holds("any")


@pytest.mark.parametrize("spec, cls", [("atmost:200", AtMost), ("polite", Polite), ("Markdown", Markdown),
                                       ("refuses@flip=0.1", Refuses)])
def test_specs_read_the_new_rules_and_round_trip(spec, cls):
    annotator = parse_annotator(spec)
    assert isinstance(annotator, cls)
    assert parse_annotator(annotator.name).name == annotator.name


@pytest.mark.parametrize("spec", ["atmost", "atmost:0", "atmost:many", "polite:very"])
def test_bad_specs_of_the_new_rules_are_one_sentence(spec):
    with pytest.raises(AnnotatorSpecError, match="Unknown annotator"):
        parse_annotator(spec)


def test_every_bench_rule_is_a_valid_spec_with_a_line():
    for rule in RULES.values():
        parse_annotator(rule.spec).holds("some text")


def test_share_gives_the_wilson_interval_of_scipy():
    figures = share(["I can't."] * 7 + ["Sure."] * 13, Refuses().holds)
    expected = binomtest(7, 20).proportion_ci(confidence_level=0.95, method="wilson")
    assert (figures["hits"], figures["n"], figures["share"]) == (7, 20, 0.35)
    assert figures["low"] == pytest.approx(expected.low, abs=1e-4)  # scipy's z is exact, ours 1.96
    assert figures["high"] == pytest.approx(expected.high, abs=1e-4)


def test_split_keeps_held_out_prompts_apart_and_holds_out_a_third_of_safety():
    rows = default_prompts()
    scopes = split_prompts(rows, held_out=40, seed=0)
    safety = [r["prompt"] for r in rows if r["category"] == "safety"]
    train, held = scopes["safety"]
    assert len(held) == math.ceil(len(safety) / 3) and sorted(train + held) == sorted(safety)
    train, held = scopes["general"]
    assert len(held) == 40 and len(train) == len(rows) - len(safety) - 40 and not set(train) & set(held)
    assert split_prompts(rows, 40, 0) == scopes and split_prompts(rows, 40, 1) != scopes
    with pytest.raises(WorkbenchError, match="hold out fewer"):
        split_prompts(rows, held_out=len(rows), seed=0)


def test_check_refuses_unknown_rules_and_methods():
    with pytest.raises(WorkbenchError, match="Unknown rule nicer"):
        check(LearnConfig(rules=("nicer",)))
    with pytest.raises(WorkbenchError, match="not sft"):
        check(LearnConfig(methods=("sft",)))


def test_results_resume_only_cells_of_the_same_settings(tmp_path):
    config = LearnConfig()
    results = Results(tmp_path)
    row = {"rule": "tone", "method": "dpo", "size": 60, "spec": RULES["tone"].spec, "settings": config.key()}
    results.add_cell(row)
    assert Results(tmp_path).cell("tone", "dpo", 60, config) == row
    assert Results(tmp_path).cell("tone", "dpo", 200, config) is None
    assert Results(tmp_path).cell("tone", "dpo", 60, LearnConfig(max_new_tokens=32)) is None
    made = []
    texts = results.base_answers("general", config, lambda: made.append(1) or ["a", "b"])
    again = results.base_answers("general", config, lambda: made.append(1) or ["c"])
    assert texts == again == ["a", "b"] and made == [1]
    assert json.loads((tmp_path / "answers.jsonl").read_text())["texts"] == ["a", "b"]


def test_only_full_ties_means_no_ranking_orders_any_two_completions():
    frame = pd.DataFrame({"ranking": ["A = B = C = D", "A = B"], "completions": [["a", "b", "c", "d"], ["a", "b"]]})
    assert only_full_ties(frame)
    assert not only_full_ties(pd.concat([frame, pd.DataFrame({"ranking": ["A = B > C"], "completions": [["a"] * 3]})]))


def test_a_cell_without_usable_pairs_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    config = LearnConfig(rules=("tone", "length"), methods=("dpo",), sizes=(60,))
    tried = []

    def fake_cell(rule, method, size, config, out, on_step):
        tried.append(rule)
        if rule == "tone":
            raise DataError(f"{learn.NO_PAIRS}: the rule tied all K completions in each of the 60 rankings.")
        share = {"share": 0.5, "low": 0.4, "high": 0.6}
        return {"rule": rule, "method": method, "size": size, "spec": RULES[rule].spec, "settings": config.key(),
                "comparisons": 60, "before": share, "after": share, "kl": None, "repetition": None,
                "heldout_accuracy": None, "minutes": 1.0}

    monkeypatch.setattr(learn, "run_cell", fake_cell)
    rows = learn.run_learn(config, tmp_path, on_step=lambda line: None)
    assert [(row["rule"], "skipped" in row) for row in rows] == [("tone", True), ("length", False)]
    assert rows[0]["skipped"].startswith("no usable pairs: ")
    assert learn.run_learn(config, tmp_path, on_step=lambda line: None) == rows and tried == ["tone", "length"]
    table = learn.markdown_cells(rows).splitlines()
    assert {line.count("|") for line in table} == {11}  # every row has the header's ten columns
    assert table[2].startswith("| tone | dpo | 60 | no usable pairs: ")
