"""The annotation service on a tiny-model home: the queue (overlap, claims, gold items),
submissions with labels and ratings, skips, roles, the schema upgrade that brought
them, and the background pre-generator."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest

import storage.db
from rlhf.annotation import Annotation, Submission
from rlhf.auth import PermissionDenied, User
from rlhf.pregenerate import PreGenerator
from rlhf.ranking import RankingError
from rlhf.workbench import Workbench, WorkbenchError
from storage import comparisons, feedback, guidelines, models, prompts, queue
from storage.comparisons import NewCompletion
from storage.db import Store

ANA, BEN, CAT = User("ana", "annotator"), User("ben", "annotator"), User("cat", "annotator")
RESEARCHER = User("rita", "researcher")


def rows(wb: Workbench, sql: str, params=None) -> list[tuple]:
    return wb.store.cursor().execute(sql, params or []).fetchall()


def count(wb: Workbench, table: str) -> int:
    return rows(wb, f"SELECT count(*) FROM {table}")[0][0]


def add_comparisons(wb: Workbench, how_many: int, k: int = 4) -> list[int]:
    """Comparisons of K completions 'answer A', ... for the first default prompts, stored
    directly: the queue needs no sampling (the pre-generator test samples)."""
    prompt_ids = [r[0] for r in rows(wb, "SELECT id FROM prompts ORDER BY id LIMIT ?", [how_many])]
    with wb.store.transaction() as cur:
        return [
            comparisons.add(cur, pid, [NewCompletion(f"answer {chr(65 + i)}", "base") for i in range(k)])
            for pid in prompt_ids
        ]


@pytest.fixture
def annotation(workbench) -> Annotation:
    service = Annotation(workbench)
    service.set_config(RESEARCHER, gold_rate=0.0)  # gold mixing is tested on its own
    return service


def rank_everything(annotation: Annotation, user: User, ranking: str = "A > B > C > D") -> list[int]:
    """Let `user` take and rank items until the queue has nothing for them; the ids, in order."""
    seen = []
    while (item := annotation.next_item(user)) is not None:
        seen.append(item.comparison_id)
        assert annotation.submit(user, Submission(item.comparison_id, ranking))["status"] == "stored"
    return seen


# -- schema ---------------------------------------------------------------------------------


def test_migration_2_upgrades_a_version_1_file_with_its_data(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    first = [m for m in storage.db.migrations() if m.version == 1]
    monkeypatch.setattr(storage.db, "migrations", lambda: first)
    with Store(path) as old, old.transaction() as cur:
        prompts.add_prompts(cur, "old", [[{"role": "user", "content": "Hi?"}]], source="v1")
        models.register(cur, "base", "policy", base_model="tiny", path="models/base", method="import")
        comparison_id = comparisons.add(cur, prompts.ids_by_fingerprint(
            cur, "old", [prompts.fingerprint([{"role": "user", "content": "Hi?"}])])[0],
            [NewCompletion("one", "base"), NewCompletion("two", "base")])
        feedback.add_ranking(cur, comparison_id, "ana", "B > A", {"B": 1, "A": 2})
    monkeypatch.undo()

    with Store(path) as upgraded:
        cur = upgraded.cursor()
        applied = [r[0] for r in cur.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
        assert applied[:2] == [1, 2] and upgraded.schema_version() == storage.db.migrations()[-1].version
        tables = {r[0] for r in cur.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"guidelines", "skips", "claims", "settings"} <= tables
        assert feedback.ranking_by(cur, comparison_id, "ana") == "B > A"  # the old data is all there
        assert comparisons.get(cur, comparison_id).completions[1]["text"] == "two"
        assert guidelines.current(cur)[0] == 0
        with upgraded.transaction() as tx:  # and the new tables work with the old rows
            feedback.add_skip(tx, comparison_id, "ben", "not my language")
            queue.set_gold(tx, comparison_id, "A > B")
        assert queue.gold_ids(cur) == [comparison_id]
        assert upgraded.migrate() == []


# -- roles ----------------------------------------------------------------------------------


def test_an_annotator_cannot_change_how_annotation_works(annotation, workbench):
    [comparison_id] = add_comparisons(workbench, 1)
    before = annotation.config
    with pytest.raises(PermissionDenied, match="researchers or admins"):
        annotation.set_config(ANA, overlap=3)
    with pytest.raises(PermissionDenied):
        annotation.save_guidelines(ANA, "Rank at random.")
    with pytest.raises(PermissionDenied):
        annotation.mark_gold(ANA, comparison_id, "A > B > C > D")
    assert annotation.config == before
    assert annotation.guidelines()[0] == 0
    assert annotation.gold_ids() == []


def test_nobody_logged_in_gets_nothing(annotation, workbench):
    add_comparisons(workbench, 1)
    with pytest.raises(PermissionDenied, match="log in"):
        annotation.next_item(None)
    assert count(workbench, "claims") == 0


def test_settings_are_checked_and_kept(annotation, workbench):
    with pytest.raises(WorkbenchError, match="no prompt set 'nope'"):
        annotation.set_config(RESEARCHER, prompt_sets=["nope"])
    with pytest.raises(WorkbenchError, match="overlap"):
        annotation.set_config(RESEARCHER, overlap=0)
    with pytest.raises(WorkbenchError, match="Unknown queue setting 'speed'"):
        annotation.set_config(RESEARCHER, speed=2)
    with pytest.raises(WorkbenchError, match="no model version 'v9'"):
        annotation.set_config(RESEARCHER, model_version="v9")
    changed = annotation.set_config(RESEARCHER, overlap=2, prompt_sets=["default"], dimensions=["clarity"])
    assert Annotation(workbench).config == changed  # stored, not just remembered
    assert changed.dimensions == ("clarity",) and changed.overlap == 2


# -- the annotation cycle -----------------------------------------------------------------


def test_next_submit_skip_cycle_stores_everything(annotation, workbench):
    first, second, third = add_comparisons(workbench, 3)
    version = annotation.save_guidelines(RESEARCHER, "# Rank well\nBe kind.")
    assert version == 1 and annotation.guidelines() == (1, "# Rank well\nBe kind.\n")

    item = annotation.next_item(ANA)
    assert item.comparison_id == first
    assert item.letters == "ABCD" and item.completions == ["answer A", "answer B", "answer C", "answer D"]
    assert item.guidelines_version == 1 and item.dimensions == ("helpfulness", "harmlessness", "honesty")
    assert item.messages[-1]["role"] == "user" and item.prompt == item.messages[-1]["content"]
    assert item.progress == {"done_today": 0, "done_total": 0, "skipped": 0, "remaining_for_me": 3}
    assert annotation.next_item(ANA).comparison_id == first  # a reload resumes the same item

    result = annotation.submit(ANA, Submission(
        first, "c>b=d>a", seconds_spent=12.5,
        labels={"A": {"good": False, "flag": "factually_wrong"}, "C": {"good": True, "flag": None},
                "B": {"good": None, "flag": None}},
        ratings={"C": {"helpfulness": 5, "honesty": 4}, "A": {"helpfulness": 1}},
        none_acceptable=True, better_answer="  A better one. ", comment="close call",
    ))
    assert result["status"] == "stored" and result["ranking"] == "C > B = D > A"
    assert result["progress"] == {"done_today": 1, "done_total": 1, "skipped": 0, "remaining_for_me": 2}
    ranking_id = result["ranking_id"]
    assert rows(workbench, "SELECT annotator, source, ranking, seconds_spent, guidelines_version, none_acceptable,"
                           " better_answer, comment FROM rankings WHERE id = ?", [ranking_id]) == [
        ("ana", "human", "C > B = D > A", 12.5, 1, True, "A better one.", "close call")]
    assert rows(workbench, "SELECT m.letter, r.rank FROM ranking_ranks r JOIN completions m ON m.id = r.completion_id"
                           " WHERE r.ranking_id = ? ORDER BY m.letter", [ranking_id]) == [
        ("A", 3), ("B", 2), ("C", 1), ("D", 2)]
    assert rows(workbench, "SELECT m.letter, l.good, l.flag FROM completion_labels l"
                           " JOIN completions m ON m.id = l.completion_id ORDER BY m.letter") == [
        ("A", False, "factually_wrong"), ("C", True, None)]  # B said nothing: no row
    assert rows(workbench, "SELECT m.letter, t.dimension, t.score FROM ratings t"
                           " JOIN completions m ON m.id = t.completion_id ORDER BY m.letter, t.dimension") == [
        ("A", "helpfulness", 1), ("C", "helpfulness", 5), ("C", "honesty", 4)]
    assert count(workbench, "claims") == 0  # the claim was released with the ranking

    assert annotation.next_item(ANA).comparison_id == second
    skipped = annotation.skip(ANA, second, "I cannot judge this topic")
    assert skipped["status"] == "skipped" and skipped["progress"]["skipped"] == 1
    assert rows(workbench, "SELECT comparison_id, annotator, reason FROM skips") == [
        (second, "ana", "I cannot judge this topic")]
    assert annotation.skip(ANA, second, "again")["status"] == "already_skipped"

    assert annotation.next_item(ANA).comparison_id == third
    annotation.submit(ANA, Submission(third, "A > B > C > D"))
    assert annotation.next_item(ANA) is None  # ranked one, skipped one: nothing left for ana
    assert annotation.next_item(BEN).comparison_id == second  # a skip uses no slot
    assert annotation.progress(ANA) == {"done_today": 2, "done_total": 2, "skipped": 1, "remaining_for_me": 0}


def test_double_submit_stores_one_ranking(annotation, workbench):
    [comparison_id] = add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    submission = Submission(item.comparison_id, "B > A > C > D", labels={"B": {"good": True, "flag": None}})
    stored = annotation.submit(ANA, submission)
    again = annotation.submit(ANA, Submission(comparison_id, "b>a>c>d"))
    assert again["status"] == "already_stored" and again["ranking"] == stored["ranking"] == "B > A > C > D"
    with pytest.raises(WorkbenchError, match="already ranked comparison .* as 'B > A > C > D'"):
        annotation.submit(ANA, Submission(comparison_id, "A > B > C > D"))
    assert count(workbench, "rankings") == 1 and count(workbench, "completion_labels") == 1


@pytest.mark.parametrize("change, error", [
    ({"ranking": "A > B > C"}, RankingError),
    ({"ranking": "A > B > C > D > E"}, RankingError),
    ({"labels": {"E": {"good": True}}}, WorkbenchError),
    ({"labels": {"A": {"flag": "rude"}}}, WorkbenchError),
    ({"labels": {"A": {"good": "yes"}}}, WorkbenchError),
    ({"ratings": {"A": {"creativity": 3}}}, WorkbenchError),
    ({"ratings": {"A": {"helpfulness": 6}}}, WorkbenchError),
    ({"ratings": {"A": {"helpfulness": True}}}, WorkbenchError),
    ({"seconds_spent": -1}, WorkbenchError),
    ({"comparison_id": 999_999}, WorkbenchError),
])
def test_a_refused_submission_stores_nothing_and_keeps_the_claim(annotation, workbench, change, error):
    add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    fields = {"comparison_id": item.comparison_id, "ranking": "A > B > C > D"} | change
    with pytest.raises(error):
        annotation.submit(ANA, Submission(**fields))
    for table in ("rankings", "ranking_ranks", "completion_labels", "ratings"):
        assert count(workbench, table) == 0
    assert annotation.next_item(ANA).comparison_id == item.comparison_id


def test_a_skip_needs_a_reason(annotation, workbench):
    [comparison_id] = add_comparisons(workbench, 1)
    with pytest.raises(WorkbenchError, match="Say why"):
        annotation.skip(ANA, comparison_id, "   ")
    annotation.submit(ANA, Submission(comparison_id, "A > B > C > D"))
    with pytest.raises(WorkbenchError, match="already ranked"):
        annotation.skip(ANA, comparison_id, "changed my mind")
    assert count(workbench, "skips") == 0


# -- overlap and claims ---------------------------------------------------------------------


def test_overlap_two_hands_one_item_to_two_annotators_and_no_third(annotation, workbench):
    first, second = add_comparisons(workbench, 2)
    annotation.set_config(RESEARCHER, overlap=2)
    assert annotation.next_item(ANA).comparison_id == first
    assert annotation.next_item(BEN).comparison_id == first
    assert annotation.next_item(CAT).comparison_id == second  # both slots of the first are held
    annotation.submit(ANA, Submission(first, "A > B > C > D"))
    assert annotation.next_item(ANA).comparison_id == second  # never the first again
    annotation.submit(BEN, Submission(first, "B > A > C > D"))
    assert annotation.ready() == 0  # the first is complete; cat and ana hold both slots of the second
    assert rank_everything(annotation, CAT) == [second]
    assert rank_everything(annotation, ANA) == [second]
    assert annotation.next_item(BEN) is None and annotation.ready() == 0
    per_comparison = dict(rows(workbench, "SELECT comparison_id, count(DISTINCT annotator) FROM rankings GROUP BY ALL"))
    assert per_comparison == {first: 2, second: 2}


def test_an_annotator_never_sees_an_item_twice(annotation, workbench):
    ids = add_comparisons(workbench, 5)
    annotation.set_config(RESEARCHER, overlap=3)
    for user in (ANA, BEN, CAT):
        seen = rank_everything(annotation, user)
        assert sorted(seen) == ids  # each once, none twice
    assert annotation.next_item(User("dan", "annotator")) is None  # three slots each, all used


def test_comparisons_closest_to_complete_come_first(annotation, workbench):
    first, second = add_comparisons(workbench, 2)
    annotation.set_config(RESEARCHER, overlap=3)
    workbench.rank(second, "A > B > C > D", "zoe")
    assert annotation.next_item(ANA).comparison_id == second  # one ranking already: finish it first


def test_twenty_annotators_at_once_lose_nothing_and_duplicate_nothing(annotation, workbench):
    ids = add_comparisons(workbench, 10)
    annotation.set_config(RESEARCHER, overlap=3)  # 30 slots for 20 people working in parallel
    results, errors = [], []

    def work(name: str, start: threading.Barrier) -> None:
        user = User(name, "annotator")
        start.wait()
        try:
            while (item := annotation.next_item(user)) is not None:
                outcome = annotation.submit(user, Submission(item.comparison_id, "D > C > B > A"))
                results.append((name, item.comparison_id, outcome["status"]))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    start = threading.Barrier(20)
    threads = [threading.Thread(target=work, args=(f"user{i:02}", start)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 30 and all(status == "stored" for *_, status in results)
    assert len({(name, cid) for name, cid, _ in results}) == 30  # nobody was handed an item twice
    stored = rows(workbench, "SELECT comparison_id, count(*), count(DISTINCT annotator) FROM rankings GROUP BY ALL")
    assert sorted(stored) == [(cid, 3, 3) for cid in ids]  # every slot filled once, none overfilled
    assert count(workbench, "claims") == 0


def test_a_claim_expires_after_its_ttl(annotation, workbench):
    [comparison_id] = add_comparisons(workbench, 1)
    annotation.set_config(RESEARCHER, claim_ttl_s=60)
    assert annotation.next_item(ANA).comparison_id == comparison_id
    assert annotation.next_item(BEN) is None and annotation.ready() == 0  # ana holds the only slot
    # ana left her tab open and walked away: her claim is now older than the TTL
    workbench.store.cursor().execute("UPDATE claims SET claimed_at = claimed_at - INTERVAL 61 SECOND")
    assert annotation.ready() == 1
    assert annotation.next_item(BEN).comparison_id == comparison_id
    assert rows(workbench, "SELECT annotator FROM claims") == [("ben",)]
    # ana comes back and submits anyway: her work is kept, not thrown away
    assert annotation.submit(ANA, Submission(comparison_id, "A > B > C > D"))["status"] == "stored"


def test_queue_claims_measure_age_with_the_given_clock(workbench):
    [comparison_id] = add_comparisons(workbench, 1)
    start = datetime(2030, 1, 1, 12, 0, 0)
    with workbench.store.transaction() as cur:
        assert queue.next_for(cur, "ana", 1, None, None, 900, now=start) == comparison_id
        assert queue.next_for(cur, "ben", 1, None, None, 900, now=start + timedelta(seconds=899)) is None
        assert queue.next_for(cur, "ben", 1, None, None, 900, now=start + timedelta(seconds=901)) == comparison_id


def test_the_queue_keeps_to_the_chosen_prompt_sets_and_model(annotation, workbench):
    default_ids = add_comparisons(workbench, 2)
    with workbench.store.transaction() as cur:
        prompts.add_prompts(cur, "extra", [[{"role": "user", "content": "Other?"}]], source="test")
        models.register(cur, "v2", "policy", base_model="tiny", path="models/base", method="dpo", parent="base")
        extra_prompt = cur.execute("SELECT id FROM prompts WHERE prompt_set = 'extra'").fetchall()[0][0]
        extra = comparisons.add(cur, extra_prompt, [NewCompletion("x", "v2"), NewCompletion("y", "v2")])
    annotation.set_config(RESEARCHER, prompt_sets=["extra"])
    assert annotation.ready() == 1 and annotation.next_item(ANA).comparison_id == extra
    annotation.set_config(RESEARCHER, prompt_sets=None, model_version="base")
    assert annotation.ready() == 2 and annotation.next_item(BEN).comparison_id == default_ids[0]


# -- gold items -----------------------------------------------------------------------------


class FixedDraws:
    """A stand-in for random.Random that returns the given draws in turn."""

    def __init__(self, *draws: float):
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


def test_gold_items_are_mixed_in_at_the_gold_rate(annotation, workbench):
    ids = add_comparisons(workbench, 4)
    gold = ids[-1]  # the newest: it would otherwise come last
    assert annotation.mark_gold(RESEARCHER, gold, "d>c>b>a") == "D > C > B > A"
    assert annotation.gold_ids() == [gold]
    with pytest.raises(RankingError):
        annotation.mark_gold(RESEARCHER, gold, "A > B")
    annotation.set_config(RESEARCHER, gold_rate=0.25, overlap=2)

    annotation.rng = FixedDraws(0.9, 0.1, 0.1, 0.9)
    assert annotation.next_item(ANA).comparison_id == ids[0]  # 0.9 >= 0.25: a normal item
    annotation.submit(ANA, Submission(ids[0], "A > B > C > D"))
    assert annotation.next_item(ANA).comparison_id == gold  # 0.1 < 0.25: the gold item
    annotation.submit(ANA, Submission(gold, "D > C > B > A"))
    assert annotation.next_item(ANA).comparison_id == ids[1]  # gold drawn, but ana has done it
    annotation.submit(ANA, Submission(ids[1], "A > B > C > D"))

    annotation.rng = FixedDraws(0.1)
    annotation.set_config(RESEARCHER, overlap=1)
    assert annotation.next_item(BEN).comparison_id == gold  # gold ignores the overlap: everybody does it
    annotation.submit(BEN, Submission(gold, "A > B > C > D"))
    assert annotation.gold_agreement(RESEARCHER).to_dict("records") == [
        {"annotator": "ana", "gold_items": 1, "exact_matches": 1},
        {"annotator": "ben", "gold_items": 1, "exact_matches": 0}]

    annotation.mark_gold(RESEARCHER, gold, None)
    assert annotation.gold_ids() == []


# -- pre-generation -------------------------------------------------------------------------


def wait_for(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


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
        assert count(workbench, "comparisons") == 3
    finally:
        generator.stop()
    assert not generator.is_alive()


def test_pregenerator_reports_errors_and_keeps_running(annotation, workbench, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(workbench, "generate", broken)
    generator = PreGenerator(annotation, interval_s=0.05)
    generator.start()
    try:
        status = wait_for(lambda: (s := generator.status())["state"] == "error" and s)
        assert status["last_error"] == "RuntimeError: the model fell over" and status["ready"] == 0
        time.sleep(0.2)
        assert generator.is_alive()
    finally:
        generator.stop()
    assert not generator.is_alive()
