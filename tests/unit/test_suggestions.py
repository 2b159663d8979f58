"""Closing the loop: reward-model suggestions shown to annotators (off by default), the
'uncertain' queue order, scoring in the background, agreement with what annotators were
shown, the reward model against held-out human rankings, and the migration runner that
applies every migration a file has not recorded (006 may land before 005)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

import storage.db
from rlhf.collect.annotation import Annotation, Submission
from rlhf.auth import User, create_user
from rlhf.collect.pregenerate import PreGenerator
from rlhf.preference.ranking import parse_ranking
from rlhf.collect.reports import Filters, Reports
from rlhf.collect.reward_audit import audit, split_comparisons
from rlhf.collect.suggestions import score_comparisons, score_table
from rlhf.collect.workbench import WorkbenchError
from rlhf.versions import VersionError
from storage import scores
from storage.db import Migration, Store
from helpers import ANA, BEN, CAT, RESEARCHER, add_comparisons, app_context, register, rows, text_scores

# a stand-in reward model: score by the completion's text
def completion_ids(wb, comparison_id: int) -> list[int]:
    return [r[0] for r in rows(wb, "SELECT id FROM completions WHERE comparison_id = ? ORDER BY letter", [comparison_id])]


def put_scores(wb, version: str, comparison_id: int, values: list[float]) -> None:
    """Hand-made scores (in letter order; fewer than K leaves the rest unscored)."""
    with wb.store.transaction() as cur:
        scores.add_scores(cur, version, dict(zip(completion_ids(wb, comparison_id), values)))


# -- suggestions ------------------------------------------------------------------------------


def test_suggestions_are_off_by_default_and_absent_from_the_item(annotation, workbench):
    from app.api import item_payload

    config = annotation.config
    assert config.suggest is False and config.selection == "random" and config.reward_models is None
    register(workbench, "rm", "reward")
    first, _ = add_comparisons(workbench, 2)
    score_comparisons(workbench.store, "rm", [first], text_scores)  # scored, but suggestions are off

    item = annotation.next_item(ANA)
    assert item.comparison_id == first and item.suggestion is None
    assert "suggestion" not in item_payload(item)
    assert rows(workbench, "SELECT count(*) FROM suggestions_shown") == [(0,)]


def test_the_reward_settings_are_checked(annotation, workbench):
    with pytest.raises(WorkbenchError, match="no reward model yet"):
        annotation.set_config(RESEARCHER, suggest=True)
    with pytest.raises(WorkbenchError, match="no reward model yet"):
        annotation.set_config(RESEARCHER, selection="uncertain")
    register(workbench, "rm", "reward")
    register(workbench, "rm2", "reward")
    register(workbench, "rm3", "reward")
    with pytest.raises(WorkbenchError, match="selection must be one of random, uncertain"):
        annotation.set_config(RESEARCHER, selection="smart")
    with pytest.raises(WorkbenchError, match="suggest must be true or false"):
        annotation.set_config(RESEARCHER, suggest="yes")
    with pytest.raises(VersionError, match="'base' is a policy"):
        annotation.set_config(RESEARCHER, reward_models=["base"])
    with pytest.raises(WorkbenchError, match="one or two reward models"):
        annotation.set_config(RESEARCHER, reward_models=["rm", "rm2", "rm3"])
    with pytest.raises(VersionError, match="no model version 'nope'"):
        annotation.set_config(RESEARCHER, reward_models="nope")
    assert annotation.config.suggest is False  # nothing refused was stored

    config = annotation.set_config(RESEARCHER, suggest=True, selection="uncertain", reward_models="rm2")
    assert (config.suggest, config.selection, config.reward_models) == (True, "uncertain", ["rm2"])
    assert annotation.set_config(RESEARCHER, reward_models=[]).reward_models is None
    assert annotation.reward_versions() == ["rm3"]  # none chosen: the newest


def test_the_queue_tab_edits_the_reward_settings(annotation, workbench):
    from app.tabs import queue as queue_tab

    create_user(workbench.store, "rita", "researcher", "a long enough password")
    request = SimpleNamespace(username="rita")
    register(workbench, "rm", "reward")
    generator = PreGenerator(annotation)
    ctx = app_context(workbench, annotation=annotation, pregenerator=generator)
    try:
        note = queue_tab.save_settings(ctx, [], queue_tab.ACTIVE_POLICY, 1, 0, 0.0, 4, 16, "",
                                       request, suggest=True, selection="uncertain",
                                       reward_models=[queue_tab.NEWEST_REWARD])
        assert note.endswith("With the newest reward model: suggestions shown, least sure first.")
        suggest, selection, models_, _candidates = queue_tab.current_settings(ctx, request)[-4:]
        assert (suggest, selection, models_["value"]) == (True, "uncertain", [queue_tab.NEWEST_REWARD])
        assert models_["choices"] == [queue_tab.NEWEST_REWARD, "rm"]
        # the reward settings keep their value when a caller (an older page) leaves them out
        queue_tab.save_settings(ctx, [], queue_tab.ACTIVE_POLICY, 2, 0, 0.0, 4, 16, "", request)
        assert annotation.config.suggest is True and annotation.config.overlap == 2
        queue_tab.save_settings(ctx, [], queue_tab.ACTIVE_POLICY, 1, 0, 0.0, 4, 16, "", request,
                                suggest=False, selection="random", reward_models=["rm"])
        assert (annotation.config.suggest, annotation.config.reward_models) == (False, ["rm"])
    finally:
        generator.stop()


def test_a_suggestion_is_shown_marked_and_recorded(annotation, workbench):
    from app.api import item_payload
    from app.tabs.annotate import item_updates

    register(workbench, "rm", "reward")
    first, second = add_comparisons(workbench, 2)
    assert score_comparisons(workbench.store, "rm", [first], text_scores) == 1
    assert rows(workbench, "SELECT ranking, scores FROM suggestions") == [
        ("B > A = C > D", json.dumps({"A": 0.5, "B": 2.0, "C": 0.5, "D": -1.0}))]
    assert rows(workbench, "SELECT count(*) FROM completion_scores WHERE reward_version = 'rm'") == [(4,)]
    annotation.set_config(RESEARCHER, suggest=True)

    item = annotation.next_item(ANA)
    assert item.comparison_id == first
    assert item.suggestion == {"ranking": "B > A = C > D", "reward_version": "rm"}
    assert parse_ranking(item.suggestion["ranking"], 4).canonical == "B > A = C > D"
    payload = item_payload(item)
    assert payload["suggestion"]["ranking"] == "B > A = C > D" and "suggestion" in payload["suggestion"]["note"]
    assert rows(workbench, "SELECT comparison_id, annotator, reward_version, ranking FROM suggestions_shown") == [
        (first, "ana", "rm", "B > A = C > D")]

    # the page: a muted box apart from the ranking, which stays empty for the annotator
    updates = item_updates(app_context(workbench, annotation=annotation, pregenerator=SimpleNamespace(status=lambda: {})), item)
    box = updates[-1]
    assert box["visible"] is True and "Reward model suggests: B > A = C > D" in box["value"]
    assert "rank as you judge" in box["value"]
    ranking_field = updates[3 + 8 * 3]  # shown, header, prompt, 8 columns, 8 selectors, 8 texts, then the ranking
    assert ranking_field == ""

    # the second comparison is not scored yet: no suggestion, nothing recorded
    annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    item = annotation.next_item(ANA)
    assert item.comparison_id == second and item.suggestion is None
    assert item_updates(app_context(workbench, annotation=annotation, pregenerator=SimpleNamespace(status=lambda: {})), item)[-1]["visible"] is False
    assert rows(workbench, "SELECT count(*) FROM suggestions_shown") == [(1,)]


def test_a_gold_item_comes_without_a_suggestion(annotation, workbench):
    register(workbench, "rm", "reward")
    gold, plain = add_comparisons(workbench, 2)
    assert score_comparisons(workbench.store, "rm", [gold, plain], text_scores) == 2
    annotation.mark_gold(RESEARCHER, gold, "A > B > C > D")
    annotation.set_config(RESEARCHER, suggest=True, gold_rate=1.0)
    item = annotation.next_item(ANA)
    assert item.comparison_id == gold and item.suggestion is None  # scored, but it is the item ana is checked on
    annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    item = annotation.next_item(ANA)
    assert item.comparison_id == plain and item.suggestion == {"ranking": "B > A = C > D", "reward_version": "rm"}
    assert rows(workbench, "SELECT comparison_id FROM suggestions_shown") == [(plain,)]


def test_agreement_with_the_suggestion_shown(annotation, workbench):
    from app.tabs import data

    register(workbench, "rm", "reward")
    first, second = add_comparisons(workbench, 2)
    score_comparisons(workbench.store, "rm", [first, second], text_scores)  # both: B > A = C > D
    annotation.set_config(RESEARCHER, suggest=True, overlap=3)

    def take_and_rank(user, ranking):
        item = annotation.next_item(user)
        annotation.submit(user, Submission(item.handout, ranking))
        return item

    assert take_and_rank(ANA, "B > A = C > D").comparison_id == first  # exactly as suggested
    assert take_and_rank(ANA, "A > B > C > D").comparison_id == second  # 4 of 6 pairs alike
    assert take_and_rank(BEN, "D > C > A > B").suggestion is not None  # every pair different
    take_and_rank(BEN, "B > A = C > D")
    annotation.set_config(RESEARCHER, suggest=False)
    assert take_and_rank(CAT, "B > A > C > D").suggestion is None  # not shown: 5 of 6 pairs alike

    figures = Reports(workbench).suggestion_agreement(Filters())
    assert figures["items"] == 4
    assert figures["pairwise_agreement"] == pytest.approx((1 + 4 / 6 + 0 + 1) / 4)
    assert figures["exact_match"] == pytest.approx(0.5)
    per = figures["per_annotator"].set_index("user")
    assert list(per.index) == ["ana", "ben"] and per.loc["ana", "items"] == 2
    assert per.loc["ana", "pairwise_agreement"] == pytest.approx((1 + 4 / 6) / 2)
    assert per.loc["ben", "kendall_tau_b"] == pytest.approx((-5 / math.sqrt(6 * 5) + 1) / 2)  # ties handled
    assert per.loc["ana", "exact_match"] == pytest.approx(0.5)
    by_version = figures["by_version"].iloc[0]
    assert by_version["reward_version"] == "rm" and by_version["shown_items"] == 4
    assert by_version["not_shown_items"] == 1 and by_version["not_shown_pairwise_agreement"] == pytest.approx(5 / 6)

    # restricted by annotator like every figure on the Data tab
    assert Reports(workbench).suggestion_agreement(Filters(annotators=("ben",)))["items"] == 2

    create_user(workbench.store, "rita", "researcher", "a long enough password")
    outputs = data.refresh(app_context(workbench, annotation=annotation), "ranked_pairs", [], [], [], "all",
                           SimpleNamespace(username="rita"))
    assert "Over **4** rankings made with a suggestion shown" in outputs[-4]
    assert outputs[-3]["user"].tolist() == ["ana", "ben"] and outputs[-1]["choices"] == ["rm"]


# -- the 'uncertain' order ---------------------------------------------------------------------


def handed_out_order(annotation: Annotation, user: User) -> list[int]:
    seen = []
    while (item := annotation.next_item(user)) is not None:
        seen.append(item.comparison_id)
        annotation.skip(user, item.handout, "order test")
    return seen


def test_uncertain_selection_hands_out_the_smallest_score_gaps_first(annotation, workbench):
    c1, c2, c3, c4, c5 = add_comparisons(workbench, 5, k=3)
    register(workbench, "rm-a", "reward")
    register(workbench, "rm-b", "reward")
    put_scores(workbench, "rm-a", c1, [0.0, 1.0, 2.0])  # smallest gap 1.0
    put_scores(workbench, "rm-a", c2, [0.0, 0.1, 5.0])  # 0.1
    put_scores(workbench, "rm-a", c3, [3.0, 2.5, 0.0])  # 0.5
    put_scores(workbench, "rm-a", c4, [1.0, 1.0])  # two of three scored: not scored yet, however close
    gaps = scores.uncertainty_frame(workbench.store.cursor(), "rm-a").set_index("comparison_id")["gap"]
    assert gaps.to_dict() == pytest.approx({c1: 1.0, c2: 0.1, c3: 0.5})

    assert handed_out_order(annotation, ANA) == [c1, c2, c3, c4, c5]  # 'random': the usual order
    annotation.set_config(RESEARCHER, selection="uncertain", reward_models=["rm-a"])
    assert handed_out_order(annotation, BEN) == [c2, c3, c1, c4, c5]

    # two reward models: where they disagree most first, then the first one's gap
    put_scores(workbench, "rm-b", c1, [2.0, 1.0, 0.0])  # the reverse of rm-a: every pair differs
    put_scores(workbench, "rm-b", c2, [0.0, 0.2, 4.0])  # same order
    put_scores(workbench, "rm-b", c3, [2.0, 2.0, 0.0])  # ties A and B: one pair of three differs
    disagreement = scores.uncertainty_frame(workbench.store.cursor(), "rm-a", "rm-b").set_index("comparison_id")
    assert disagreement["disagreement"].to_dict() == pytest.approx({c1: 1.0, c2: 0.0, c3: 1 / 3})
    annotation.set_config(RESEARCHER, reward_models=["rm-a", "rm-b"])
    assert handed_out_order(annotation, CAT) == [c1, c3, c2, c4, c5]


def test_uncertain_selection_keeps_an_annotators_own_claim_first(annotation, workbench):
    c1, c2, c3 = add_comparisons(workbench, 3, k=2)
    register(workbench, "rm", "reward")
    put_scores(workbench, "rm", c2, [0.0, 5.0])
    put_scores(workbench, "rm", c3, [0.0, 0.01])
    assert annotation.next_item(ANA).comparison_id == c1  # claimed before the order changed
    annotation.set_config(RESEARCHER, selection="uncertain")
    assert annotation.next_item(ANA).comparison_id == c1  # a reload resumes it
    assert annotation.next_item(BEN).comparison_id == c3


# -- scoring in the background -----------------------------------------------------------------


def test_scoring_errors_are_reported_and_asked_for_comparisons_come_first(annotation, workbench):
    register(workbench, "rm", "reward", path="models/missing-rm")
    made = add_comparisons(workbench, 2, k=2)
    generator = PreGenerator(annotation)

    class Broken:
        def score(self, *args):
            raise RuntimeError("no such reward model")

        def close(self):
            pass

    generator.sampler = Broken()
    assert generator.request_scores("rm", [made[1], made[1]]) == 1
    assert generator.score_once() is False
    assert generator.status()["score_error"] == "RuntimeError: no such reward model"

    class Fake(Broken):
        calls = []

        def score(self, reward_dir, prompts_, texts, categories=None):
            self.calls.append((str(reward_dir), len(texts)))
            return [float(len(text)) for text in texts]

    generator.sampler = Fake()
    assert generator.score_once() is True  # the one asked for, though the queue settings want none
    assert Fake.calls == [(str(workbench.home.root / "models/missing-rm"), 2)]
    assert scores.with_suggestion(workbench.store.cursor(), "rm", made) == {made[1]}
    status = generator.status()
    assert status["score_error"] is None and status["score_requests"] == 0
    assert generator.score_once() is False


# -- scores shown, not stored (`rlhf score`) ---------------------------------------------------


def test_score_table_has_a_row_per_completion_scored_in_one_call(workbench):
    first, second = add_comparisons(workbench, 2, k=3)
    found = [workbench.comparison(first), workbench.comparison(second)]
    calls = []

    def score(prompts_, texts, categories):
        calls.append((list(prompts_), list(texts), list(categories)))
        return text_scores(prompts_, texts)

    table = score_table(found, score)
    assert list(table.columns) == ["comparison_id", "letter", "model_version", "score", "text"]
    assert table.values.tolist() == [[first, "A", "base", 0.5, "answer A"], [first, "B", "base", 2.0, "answer B"],
                                     [first, "C", "base", 0.5, "answer C"], [second, "A", "base", 0.5, "answer A"],
                                     [second, "B", "base", 2.0, "answer B"], [second, "C", "base", 0.5, "answer C"]]
    assert len(calls) == 1 and calls[0][0] == [found[0].messages] * 3 + [found[1].messages] * 3
    assert rows(workbench, "SELECT count(*) FROM completion_scores") == [(0,)]  # shown, not stored

    empty = score_table([], lambda prompts_, texts, categories_: pytest.fail("nothing to score"))
    assert empty.empty and list(empty.columns) == ["comparison_id", "letter", "model_version", "text", "score"]


def test_workbench_score_uses_the_reward_model_and_refuses_unknown_comparisons(workbench, tiny_reward_dir):
    from rlhf.modeling.scoring import RewardScorer

    register(workbench, "rm", "reward", path=str(tiny_reward_dir))
    first, _ = add_comparisons(workbench, 2, k=2)
    found = workbench.comparison(first)
    expected = RewardScorer(tiny_reward_dir).score([found.messages] * 2, ["answer A", "answer B"])
    table = workbench.score("rm", [first])
    assert table["letter"].tolist() == ["A", "B"] and table["score"].tolist() == pytest.approx(expected, abs=1e-5)
    assert len(workbench.score(None, limit=5)) == 4  # the newest reward model, the newest comparisons
    with pytest.raises(WorkbenchError, match="There is no comparison 999"):
        workbench.score("rm", [999])


# -- the migration runner ----------------------------------------------------------------------


def test_a_migration_that_lands_late_is_still_applied(tmp_path, monkeypatch):
    shipped = storage.db.migrations()
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(storage.db, "migrations", lambda: [m for m in shipped if m.version <= 4])
    with Store(path) as old:
        assert old.schema_version() == 4

    # this release ships 006 but not 005 yet
    monkeypatch.setattr(storage.db, "migrations", lambda: [m for m in shipped if m.version != 5])
    with Store(path) as upgraded:
        assert 6 in upgraded.applied_versions() and 5 not in upgraded.applied_versions()
        assert upgraded.cursor().execute("SELECT count(*) FROM completion_scores").fetchall() == [(0,)]

    # 005 arrives in a later release: below the highest applied, and applied all the same
    five = next((m for m in shipped if m.version == 5), Migration(5, "late", "CREATE TABLE late_five (x INTEGER);"))
    monkeypatch.setattr(storage.db, "migrations", lambda: sorted([*[m for m in shipped if m.version != 5], five],
                                                                 key=lambda m: m.version))
    with Store(path) as later:
        assert later.applied_versions() == {m.version for m in shipped} | {5}
        assert later.migrate() == []  # nothing twice


# -- the reward model against people -----------------------------------------------------------


def test_reward_audit_on_held_out_rankings_with_ties(workbench):
    from rlhf.train.common import split_by_comparison

    c1, c2, c3, c4, c5 = add_comparisons(workbench, 5, k=3)
    # the reward job's snapshot: rankings of c1, c2, c3; the trainer held one of them out
    job_dir = workbench.home.root / "jobs" / "9"
    job_dir.mkdir(parents=True)
    snapshot = pd.DataFrame({"ranking_id": [1, 2, 3, 4], "comparison_id": [c1, c1, c2, c3]})
    snapshot.to_parquet(job_dir / "data.parquet")
    (job_dir / "spec.json").write_text(json.dumps({"options": {"eval_fraction": 0.34}, "config": {"seed": 0}}))
    trained, held = split_comparisons([c1, c2, c3], 0.34, 0)
    train_rows, eval_rows = split_by_comparison(snapshot, 0.34, 0)  # the trainer's own split
    assert trained == set(train_rows["comparison_id"]) and held == set(eval_rows["comparison_id"])
    (h,) = held
    register(workbench, "rm", "reward", data_snapshot="jobs/9/data.parquet")

    for comparison_id in (c1, c2, c3, c4, c5):
        workbench.rank(comparison_id, "A > B > C" if comparison_id != c5 else "A = B > C", "ana")
    workbench.rank(c5, "A > B > C", "ben")
    workbench.rank(h, "C > B > A", "bot", source="simulated")  # not a person
    for comparison_id in trained:  # trained on: would spoil the figures if counted
        put_scores(workbench, "rm", comparison_id, [0.0, 1.0, 2.0])
    put_scores(workbench, "rm", h, [3.0, 2.0, 1.0])  # agrees with ana
    put_scores(workbench, "rm", c5, [0.0, 1.0, 2.0])  # C > B > A: against both annotators
    # c4 is held out but not scored

    result = audit(workbench, "rm")
    assert result["version"] == "rm" and "trained on 2 comparisons" in result["note"]
    assert (result["held_out_rankings"], result["held_out_comparisons"], result["scored_rankings"]) == (4, 3, 3)
    assert result["missing"] == [c4]
    assert result["pairwise_agreement"] == pytest.approx((1 + 0 + 0) / 3)  # ana's tie on c5 counts against
    assert result["kendall_tau_b"] == pytest.approx((1 - 2 / math.sqrt(6) - 1) / 3)
    assert (result["pairs_right"], result["pairs_wrong"]) == (3, 5) and result["pair_accuracy"] == pytest.approx(3 / 8)
    worst = result["worst"]
    assert worst["comparison_id"].tolist() == [c5, h]
    top = worst.iloc[0]
    assert (top["model_order"], top["people_order"], top["annotators"]) == ("C > B > A", "A > B > C", 2)
    assert top["kendall_tau_b"] == pytest.approx(-1.0)
    assert top["prompt"] == workbench.comparison(c5).prompt

    # scoring what is missing first (as the CLI would, with a RewardScorer's score)
    filled = audit(workbench, "rm", score=lambda prompts_, texts, categories_: [3.0, 2.0, 1.0] * (len(texts) // 3), limit=1)
    assert filled["missing"] == [] and filled["scored_rankings"] == 4 and len(filled["worst"]) == 1

    # a version trained on nothing this store knows: every ranking is held out
    register(workbench, "imported", "reward")
    put_scores(workbench, "imported", c1, [1.0, 1.0, 1.0])  # ties everything: tau-b undefined
    plain = audit(workbench, "imported")
    assert "no training snapshot" in plain["note"] and plain["held_out_rankings"] == 6
    assert plain["scored_rankings"] == 1 and plain["pairwise_agreement"] == pytest.approx(0.0)
    assert math.isnan(plain["kendall_tau_b"])


def test_the_data_tab_audits_and_asks_for_missing_scores(annotation, workbench):
    from app.tabs import data

    create_user(workbench.store, "rita", "researcher", "a long enough password")
    request = SimpleNamespace(username="rita")
    c1, c2 = add_comparisons(workbench, 2, k=2)
    register(workbench, "rm", "reward")
    workbench.rank(c1, "A > B", "ana")
    workbench.rank(c2, "A = B", "ana")
    put_scores(workbench, "rm", c1, [0.0, 1.0])
    generator = PreGenerator(annotation)
    ctx = app_context(workbench, annotation=annotation, pregenerator=generator)
    try:
        note, worst = data.audit_reward(ctx, None, request)
        assert "**rm** against **2** held-out human rankings" in note and "being scored in the background" in note
        assert generator.status()["score_requests"] == 1
        assert worst[["model_order", "people_order"]].values.tolist() == [["B > A", "A > B"]]
        with pytest.raises(Exception, match="no model version 'nope'"):
            data.audit_reward(ctx, "nope", request)
    finally:
        generator.stop()
