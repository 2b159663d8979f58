"""Rounds of data collection and comparisons that mix sources: promoting a policy starts
the next round and new comparisons carry it; the queue's `sources` setting mixes the
active policy, the previous round's policy, the base and other temperatures inside one
comparison, in shuffled order, without telling annotators; a store made at schema 3 is
upgraded; the Data tab's figures split by round."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections import Counter
from types import SimpleNamespace

import pytest

import storage.db
from app.tabs.data import _filters, round_choices
from app.tabs.queue import parse_sources, sources_text
from rlhf.collect.annotation import Annotation, Item, Submission
from rlhf.auth import create_user
from rlhf.modeling.generate import Sample
from rlhf.home import BASE_VERSION
from rlhf.collect.pregenerate import PreGenerator
from rlhf.collect.reports import Filters, Reports
from rlhf.modeling.sampling import SamplingParams
from rlhf.collect.sources import check_sources
from rlhf.collect.workbench import Workbench, WorkbenchError
from rlhf.versions import VersionError
from storage import comparisons, feedback, models, prompts, rounds
from storage.comparisons import NewCompletion
from storage.db import Store
from helpers import ANA, BEN, RESEARCHER, app_context, rows

FAST = SamplingParams(max_new_tokens=4, seed=1)
MIXED = [{"version": "active", "count": 2}, {"version": "previous", "count": 1},
         {"version": "base", "count": 1, "temperature": 1.0}]


class FakeSampler:
    """`sampler(model_dir, conversations, k, params)` without a model: the text names the
    model directory and the call, so a test can see where each completion came from."""

    def __init__(self):
        self.calls = []

    def __call__(self, model_dir, conversations, k, params):
        self.calls.append((model_dir.name, len(conversations), k, params.temperature))
        call = len(self.calls)
        return [[Sample(f"{model_dir.name} call {call} prompt {i} sample {j}", 3, "eos")
                 for j in range(k)] for i in range(len(conversations))]

    sample = __call__

    def close(self, timeout: float = 10) -> None:
        pass


def add_version(wb: Workbench, name: str, copy_weights: bool = False) -> None:
    """A second policy version: the base's weights under models/<name>, registered as a candidate."""
    target = wb.home.model_dir(name)
    if copy_weights:
        shutil.copytree(wb.home.model_dir(BASE_VERSION), target)
    with wb.store.transaction() as cur:
        models.register(cur, name, "policy", base_model="tiny", path=str(target.relative_to(wb.home.root)),
                        method="dpo", parent=BASE_VERSION)


def tiny_set(wb: Workbench, how_many: int = 3) -> str:
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, "tiny", [[{"role": "user", "content": f"Say {i}."}] for i in range(how_many)],
                            source="test")
    return "tiny"


def completions_of(wb: Workbench, comparison_id: int) -> list[dict]:
    return comparisons.get(wb.store.cursor(), comparison_id).completions


# -- schema ------------------------------------------------------------------------------


def test_a_schema_3_store_is_upgraded_and_keeps_its_comparisons_in_round_1(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    first_three = [m for m in storage.db.migrations() if m.version <= 3]
    assert [m.version for m in first_three] == [1, 2, 3]
    monkeypatch.setattr(storage.db, "migrations", lambda: first_three)
    with Store(path) as old, old.transaction() as cur:
        prompts.add_prompts(cur, "old", [[{"role": "user", "content": "Hi?"}]], source="v3")
        models.register(cur, "base", "policy", base_model="tiny", path="models/base", method="import", status="active")
        models.register(cur, "v2", "policy", base_model="tiny", path="models/v2", method="dpo", parent="base")
        prompt_id = prompts.ids_by_fingerprint(cur, "old", [prompts.fingerprint([{"role": "user", "content": "Hi?"}])])[0]
        comparison_id = comparisons.add(cur, prompt_id, [NewCompletion("one", "base"), NewCompletion("two", "base")])
        feedback.add_ranking(cur, comparison_id, "ana", "B > A", {"B": 1, "A": 2})
    monkeypatch.undo()

    with Store(path) as upgraded:
        cur = upgraded.cursor()
        assert upgraded.schema_version() == storage.db.migrations()[-1].version >= 4
        assert [r[0] for r in cur.execute("SELECT round FROM comparisons").fetchall()] == [1]
        assert cur.execute("SELECT round, policy FROM rounds").fetchall() == [(1, "base")]
        assert rounds.current(cur).number == 1 and rounds.previous_policy(cur) is None
        assert feedback.ranking_by(cur, comparison_id, "ana") == "B > A"
        with upgraded.transaction() as tx:
            assert models.promote(tx, "v2") == 2
        assert cur.execute("SELECT round, policy FROM rounds ORDER BY round").fetchall() == [(1, "base"), (2, "v2")]
        assert rounds.previous_policy(cur) == "base"
        assert upgraded.migrate() == []


def test_a_new_store_records_round_1_at_its_first_promotion(tmp_path):
    with Store(tmp_path / "new.duckdb") as store, store.transaction() as cur:
        assert rounds.current(cur) == rounds.Round(1, None, None)
        models.register(cur, "base", "policy", base_model="tiny", path="models/base", method="import", status="active")
        models.register(cur, "v2", "policy", base_model="tiny", path="models/v2", method="dpo")
        assert rounds.current(cur).number == 1 and rounds.current(cur).policy == "base"
        assert list(rounds.list_rounds(cur)[["round", "policy"]].itertuples(index=False)) == [(1, "base")]
        assert models.promote(cur, "base") == 1  # already active: no new round
        assert cur.execute("SELECT count(*) FROM rounds").fetchall() == [(0,)]
        assert models.promote(cur, "v2") == 2
        assert cur.execute("SELECT round, policy FROM rounds ORDER BY round").fetchall() == [(1, "base"), (2, "v2")]


# -- rounds ------------------------------------------------------------------------------


def test_promote_starts_the_next_round_and_new_comparisons_carry_it(workbench):
    sampler = FakeSampler()
    prompt_set = tiny_set(workbench)
    first = workbench.generate(prompt_set, n=1, k=2, params=FAST, sampler=sampler)
    add_version(workbench, "v2")
    assert workbench.promote("v2") == 2
    assert workbench.promote("v2") == 2  # promoting the active one again starts nothing
    second = workbench.generate(prompt_set, n=2, k=2, params=FAST, sampler=sampler)
    assert rows(workbench, "SELECT round, count(*) FROM comparisons GROUP BY round ORDER BY round") == [(1, 1), (2, 2)]
    assert {c["model_version"] for cid in second for c in completions_of(workbench, cid)} == {"v2"}
    assert comparisons.get(workbench.store.cursor(), first[0]).round == 1
    assert workbench.promote("base") == 3
    assert list(workbench.list_rounds()[["round", "policy"]].itertuples(index=False)) == [
        (1, "base"), (2, "v2"), (3, "base")]
    assert rows(workbench, "SELECT name FROM model_versions WHERE status = 'active'") == [("base",)]

    with workbench.store.transaction() as cur:
        models.register(cur, "rm", "reward", base_model="tiny", path="models/rm", method="reward")
    with pytest.raises(VersionError, match="the active version must be a policy version"):
        workbench.promote("rm")
    assert workbench.current_round().number == 3


def test_sources_mix_versions_in_shuffled_order_with_their_counts(workbench):
    sampler = FakeSampler()
    prompt_set = tiny_set(workbench, 6)
    add_version(workbench, "v2")
    workbench.promote("v2")
    made = workbench.generate(prompt_set, n=6, params=FAST, sampler=sampler, sources=MIXED)
    assert len(made) == 6
    # one batched call per (version, settings): active v2 x2, previous (base) x1, base at temperature 1 x1
    assert sampler.calls == [("v2", 6, 2, 0.8), ("base", 6, 1, 0.8), ("base", 6, 1, 1.0)]
    orders = set()
    for comparison_id in made:
        found = comparisons.get(workbench.store.cursor(), comparison_id)
        assert found.k == 4 and found.round == 2
        assert [c["letter"] for c in found.completions] == ["A", "B", "C", "D"]
        sources = [(c["model_version"], json.loads(c["sampling"])["temperature"]) for c in found.completions]
        assert Counter(sources) == Counter({("v2", 0.8): 2, ("base", 0.8): 1, ("base", 1.0): 1})
        orders.add(tuple(sources))
    assert len(orders) > 1  # the position says nothing about the source
    # and the texts went with their sources: what v2 drew is stored as v2's
    for comparison_id in made:
        assert all(c["text"].startswith(c["model_version"]) for c in completions_of(workbench, comparison_id))


def test_sources_with_the_tiny_model(workbench):
    """For real: each source's completions sampled by its own model for the whole batch."""
    prompt_set = tiny_set(workbench, 3)
    add_version(workbench, "v2", copy_weights=True)
    workbench.promote("v2")
    sources = [{"version": "active", "count": 2}, {"version": "previous", "count": 2},
               {"version": "base", "count": 2, "temperature": 1.2}]
    made = workbench.generate(prompt_set, n=3, params=FAST, sources=sources)
    assert len(made) == 3
    orders = set()
    for comparison_id in made:
        stored = rows(workbench, "SELECT letter, model_version, sampling->>'temperature', num_tokens FROM completions"
                                 " WHERE comparison_id = ? ORDER BY letter", [comparison_id])
        assert [r[0] for r in stored] == list("ABCDEF")
        assert Counter((r[1], float(r[2])) for r in stored) == Counter({("v2", 0.8): 2, ("base", 0.8): 2,
                                                                        ("base", 1.2): 2})
        assert all(1 <= r[3] <= 4 for r in stored)
        orders.add(tuple((r[1], r[2]) for r in stored))
    assert len(orders) > 1
    assert rows(workbench, "SELECT DISTINCT round FROM comparisons") == [(2,)]


def test_previous_falls_back_to_the_active_policy_in_round_1(workbench, caplog):
    sampler = FakeSampler()
    prompt_set = tiny_set(workbench, 2)
    plan = workbench.plan_sources(MIXED, params=FAST)
    assert plan.round == 1 and plan.k == 4 and [s.version for s in plan.sources] == ["base", "base", "base"]
    assert plan.notes == ("Round 1 has no previous round: the 'previous' completions come from base instead.",)
    with caplog.at_level(logging.WARNING, logger="rlhf.collect.workbench"):
        made = workbench.generate(prompt_set, n=2, params=FAST, sampler=sampler, sources=MIXED)
    assert len(made) == 2 and "no previous round" in caplog.text
    assert sampler.calls == [("base", 2, 3, 0.8), ("base", 2, 1, 1.0)]  # active and previous drawn together

    annotation = Annotation(workbench)
    annotation.set_config(RESEARCHER, gold_rate=0.0, prompt_sets=["tiny"], ready_target=5, sources=MIXED)
    tiny_set(workbench, 4)  # two more prompts to generate for
    generator = PreGenerator(annotation)
    generator.sampler = FakeSampler()
    try:
        assert generator.fill_once() is True
        status = generator.status()
        assert status["round"] == 1 and "no previous round" in status["note"] and status["last_error"] is None
    finally:
        generator.stop()


# -- the queue's setting -----------------------------------------------------------------


@pytest.mark.parametrize("sources, error", [
    ([{"version": "v9", "count": 2}, {"version": "active", "count": 1}], "There is no model version 'v9'"),
    ([{"version": "active", "count": 0}, {"version": "base", "count": 2}], "count of source 'active' must be"),
    ([{"version": "active", "count": 2.5}], "count of source 'active' must be a whole number"),
    ([{"version": "active", "count": 5}, {"version": "base", "count": 4}], "add up to K=9"),
    ([{"version": "active", "count": 1}], "add up to K=1"),
    ([{"version": "active", "count": 2, "temp": 1.0}], "Unknown source setting 'temp'"),
    ([{"version": "active", "count": 2, "temperature": -1}], "temperature of source 'active' must be a number"),
    ([{"count": 2}], "Each source needs a version"),
    ("active", "sources must be a list"),
    ([["active", 2]], "Each source must be an object"),
])
def test_bad_sources_are_refused_in_one_sentence_and_nothing_is_stored(workbench, sources, error):
    annotation = Annotation(workbench)
    before = annotation.config
    with pytest.raises((WorkbenchError, VersionError), match=error) as raised:
        annotation.set_config(RESEARCHER, sources=sources)
    assert str(raised.value).count(". ") == 0 and str(raised.value).endswith(".")
    assert annotation.config == before


def test_sources_setting_is_kept_and_sets_k(workbench):
    annotation = Annotation(workbench)
    add_version(workbench, "v2")
    config = annotation.set_config(RESEARCHER, sources=[{"version": "v2", "count": 3},
                                                        {"version": " base ", "count": 2, "temperature": 1}])
    assert config.k == 5 and config.sources == [{"version": "v2", "count": 3},
                                                {"version": "base", "count": 2, "temperature": 1.0}]
    assert annotation.config.sources == config.sources and annotation.config.k == 5
    assert annotation.set_config(RESEARCHER, sources=None).sources is None
    assert annotation.set_config(RESEARCHER, sources=[]).sources is None
    assert check_sources(None) is None
    with workbench.store.transaction() as cur:
        models.register(cur, "rm", "reward", base_model="tiny", path="models/rm", method="reward")
    with pytest.raises(VersionError, match="is a reward model"):
        annotation.set_config(RESEARCHER, sources=[{"version": "rm", "count": 2}])
    # the Queue tab's editor round-trips the setting and says plainly what is wrong with bad JSON
    assert parse_sources(sources_text(config.sources)) == config.sources
    assert parse_sources("  ") is None and sources_text(None) == ""
    with pytest.raises(Exception, match="not valid JSON"):
        parse_sources("[{version: active}]")


def test_annotators_are_not_told_which_completion_came_from_which_version(workbench):
    sampler = FakeSampler()
    prompt_set = tiny_set(workbench, 1)
    add_version(workbench, "v2")
    workbench.promote("v2")
    annotation = Annotation(workbench)
    annotation.set_config(RESEARCHER, gold_rate=0.0, prompt_sets=[prompt_set], sources=MIXED)
    [made] = workbench.generate(prompt_set, n=1, params=FAST, sampler=sampler, sources=MIXED)
    item = annotation.next_item(ANA)
    assert item.comparison_id == made
    assert {f.name for f in dataclasses.fields(Item)} == {
        "comparison_id", "handout", "prompt", "messages", "letters", "completions", "guidelines_version",
        "dimensions", "progress", "suggestion"}  # suggestion: a reward model's ranking (names the reward version only)
    assert item.suggestion is None  # suggestions are off unless a researcher turns them on
    shown = repr(dataclasses.replace(item, completions=[]))  # the texts are the fake sampler's, naming dirs
    assert "v2" not in shown and "base" not in shown and "temperature" not in shown and "round" not in shown


# -- the Data tab ------------------------------------------------------------------------


def test_data_tab_figures_split_by_round(workbench):
    sampler = FakeSampler()
    prompt_set = tiny_set(workbench, 3)
    first = workbench.generate(prompt_set, n=2, k=2, params=FAST, sampler=sampler)
    add_version(workbench, "v2")
    workbench.promote("v2")
    second = workbench.generate(prompt_set, n=3, k=3, params=FAST, sampler=sampler)
    annotation = Annotation(workbench)

    def take_and_rank(who, ranking: str) -> int:
        item = annotation.next_item(who)
        annotation.submit(who, Submission(item.handout, ranking))
        return item.comparison_id

    annotation.set_config(RESEARCHER, gold_rate=0.0, overlap=2, model_version="base")
    assert [take_and_rank(ANA, "A > B") for _ in first] == first
    annotation.set_config(RESEARCHER, model_version="v2")
    for who, ranking in ((ANA, "A > B > C"), (BEN, "A > B = C")):  # two annotators on one round-2 item
        assert take_and_rank(who, ranking) == second[0]

    reports = Reports(workbench)
    assert reports.choices()["rounds"] == [(1, "base"), (2, "v2")]
    split = reports.by_round(Filters())
    assert split[["round", "active_version", "comparisons", "ranked", "rankings", "overlap_items"]].to_dict(
        "records") == [
        {"round": 1, "active_version": "base", "comparisons": 2, "ranked": 2, "rankings": 2, "overlap_items": 0},
        {"round": 2, "active_version": "v2", "comparisons": 3, "ranked": 1, "rankings": 2, "overlap_items": 1},
    ]
    assert split.loc[1, "pairwise_agreement"] == pytest.approx(2 / 3)

    only_two = Filters(rounds=(2,))
    assert list(reports.by_round(only_two)["round"]) == [2]
    activity = reports.activity(only_two)
    assert set(activity["recent"]["round"]) == {2} and len(activity["recent"]) == 2
    assert activity["per_annotator"].set_index("annotator")["rankings"].to_dict() == {"ana": 1, "ben": 1}
    assert reports.activity(Filters(rounds=(1,)))["per_annotator"]["rankings"].tolist() == [2]
    assert reports.agreement(only_two)["items"] == 1 and reports.agreement(Filters(rounds=(1,)))["items"] == 0
    assert set(reports.compute_consensus(only_two, "borda")["comparison_id"]) == {second[0]}
    # the annotator filter applies to the per-round rankings too
    assert reports.by_round(Filters(annotators=("ben",)))["rankings"].tolist() == [0, 1]

    # the page's selector
    assert round_choices(reports.choices()["rounds"]) == [("All rounds", "all"), ("Round 1 · base", "1"),
                                                          ("Round 2 · v2", "2")]
    assert _filters(None, None, None, "2") == only_two and _filters(None, None, None, "all") == Filters()


def test_queue_and_data_tab_handlers_edit_the_sources_and_split_by_round(workbench):
    from app.tabs import data, queue

    create_user(workbench.store, "rita", "researcher", "a long enough password")
    request = SimpleNamespace(username="rita")
    annotation, reports = Annotation(workbench), Reports(workbench)
    generator = PreGenerator(annotation)
    generator.sampler = FakeSampler()
    ctx = app_context(workbench, annotation=annotation, pregenerator=generator, reports=reports)
    add_version(workbench, "v2")
    try:
        note = queue.save_settings(ctx, [], queue.ACTIVE_POLICY, 1, 0, 0.0, 4, 16,
                                   json.dumps(MIXED), request)
        assert "K=4" in note and "2 × active, 1 × previous, 1 × base at temperature 1" in note
        shown = queue.current_settings(ctx, request)
        assert json.loads(shown[7]) == MIXED and shown[5] == 4
        with pytest.raises(Exception, match="add up to K=9"):
            queue.save_settings(ctx, [], queue.ACTIVE_POLICY, 1, 0, 0.0, 4, 16,
                                '[{"version": "active", "count": 9}]', request)
        assert annotation.config.sources == MIXED
        # an emptied number box arrives as None: one sentence naming the setting, nothing stored
        for emptied, name in ((1, "overlap"), (2, "ready_target"), (3, "gold_rate"), (4, "k"), (5, "max_new_tokens")):
            values = [1, 0, 0.0, 4, 16]
            values[emptied - 1] = None
            with pytest.raises(Exception, match=f"{name} must be a (whole )?number .*, not None\\."):
                queue.save_settings(ctx, [], queue.ACTIVE_POLICY, *values, "", request)
        assert annotation.config.sources == MIXED and annotation.config.k == 4
        assert "(all from the generating version)" in queue.save_settings(
            ctx, [], queue.ACTIVE_POLICY, 1, 0, 0.0, 3, 16, "", request)
    finally:
        generator.stop()

    workbench.generate(tiny_set(workbench, 2), n=1, k=2, params=FAST, sampler=FakeSampler())
    workbench.promote("v2")
    outputs = data.refresh(ctx, "ranked_pairs", [], [], [], "2", request)
    assert outputs[3]["choices"] == [("All rounds", "all"), ("Round 1 · base", "1"), ("Round 2 · v2", "2")]
    assert outputs[4][["round", "active_version", "comparisons"]].to_dict("records") == [
        {"round": 2, "active_version": "v2", "comparisons": 0}]
    everything = data.refresh(ctx, "ranked_pairs", [], [], [], "all", request)
    assert everything[4]["comparisons"].tolist() == [1, 0]
