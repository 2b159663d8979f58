"""The annotation service on a tiny-model home: the queue (overlap, claims, gold items),
submissions with labels and ratings, skips, roles, the schema upgrade that brought
them, and the background pre-generator."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

import storage.db
from rlhf.collect.annotation import Annotation, Submission
from rlhf.auth import PermissionDenied, User
from rlhf.collect.pregenerate import PreGenerator
from rlhf.preference.ranking import RankingError
from rlhf.collect.reports import Reports
from rlhf.collect.workbench import Workbench, WorkbenchError
from rlhf.versions import VersionError
from storage import comparisons, feedback, guidelines, models, prompts, queue
from storage.activity import Filters
from storage.comparisons import NewCompletion
from storage.db import Store
from helpers import ANA, BEN, CAT, RESEARCHER, add_comparisons, app_context, rank_everything, rows, wait_for



def count(wb: Workbench, table: str) -> int:
    return rows(wb, f"SELECT count(*) FROM {table}")[0][0]


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
    with pytest.raises(VersionError, match="no model version 'v9'"):
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
    again = annotation.next_item(ANA)
    assert (again.comparison_id, again.handout) == (first, item.handout)  # a reload resumes the same item

    result = annotation.submit(ANA, Submission(
        item.handout, "c>b=d>a", client_seconds=12.5,
        labels={"A": {"good": False, "flag": "factually_wrong"}, "C": {"good": True, "flag": None},
                "B": {"good": None, "flag": None}},
        ratings={"C": {"helpfulness": 5, "honesty": 4}, "A": {"helpfulness": 1}},
        none_acceptable=True, better_answer="  A better one. ", comment="close call",
    ))
    assert result["status"] == "stored" and result["ranking"] == "C > B = D > A"
    assert result["progress"] == {"done_today": 1, "done_total": 1, "skipped": 0, "remaining_for_me": 2}
    ranking_id = result["ranking_id"]
    assert rows(workbench, "SELECT annotator, source, ranking, guidelines_version, none_acceptable,"
                           " better_answer, comment FROM rankings WHERE id = ?", [ranking_id]) == [
        ("ana", "human", "C > B = D > A", 1, True, "A better one.", "close call")]
    [(seconds,)] = rows(workbench, "SELECT seconds_spent FROM rankings WHERE id = ?", [ranking_id])
    assert 0 <= seconds < 12.5  # the server's clock, from the hand-out; not the client's 12.5
    assert rows(workbench, "SELECT client_seconds FROM handouts WHERE token = ?", [item.handout]) == [(12.5,)]
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

    item = annotation.next_item(ANA)
    assert item.comparison_id == second
    skipped = annotation.skip(ANA, item.handout, "I cannot judge this topic")
    assert skipped["status"] == "skipped" and skipped["progress"]["skipped"] == 1
    assert rows(workbench, "SELECT comparison_id, annotator, reason FROM skips") == [
        (second, "ana", "I cannot judge this topic")]
    assert annotation.skip(ANA, item.handout, "again")["status"] == "already_skipped"
    with pytest.raises(WorkbenchError, match="You skipped this item"):
        annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))

    item = annotation.next_item(ANA)
    assert item.comparison_id == third
    annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    assert annotation.next_item(ANA) is None  # ranked one, skipped one: nothing left for ana
    assert annotation.next_item(BEN).comparison_id == second  # a skip uses no slot
    assert annotation.progress(ANA) == {"done_today": 2, "done_total": 2, "skipped": 1, "remaining_for_me": 0}


def test_submit_and_next_counts_progress_as_a_fresh_look_would(annotation, workbench):
    """The page's one request (store, then hand out the next) counts progress once, from the
    queue's own choice; the figures must be those `progress` reads afresh."""
    add_comparisons(workbench, 4)
    annotation.set_config(User("admin", "admin"), overlap=2)
    held_by_ben = annotation.next_item(BEN)
    item = annotation.next_item(ANA)
    result, following = annotation.submit_and_next(ANA, Submission(item.handout, "B > A = C > D"))
    assert result["status"] == "stored" and following.comparison_id != item.comparison_id
    assert result["progress"] == following.progress == annotation.progress(ANA) == {
        "done_today": 1, "done_total": 1, "skipped": 0, "remaining_for_me": 3}
    annotation.skip(ANA, following.handout, "I cannot judge this topic")
    for _ in range(2):
        last = annotation.next_item(ANA)
        result, following = annotation.submit_and_next(ANA, Submission(last.handout, "A > B > C > D"))
    assert following is None  # what is left is ranked, skipped, or ben's
    assert (held_by_ben.comparison_id, "ben") in rows(workbench, "SELECT comparison_id, annotator FROM claims")
    assert result["progress"] == annotation.progress(ANA) == {
        "done_today": 3, "done_total": 3, "skipped": 1, "remaining_for_me": 0}


def test_double_submit_stores_one_ranking(annotation, workbench):
    add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    submission = Submission(item.handout, "B > A > C > D", labels={"B": {"good": True, "flag": None}})
    stored = annotation.submit(ANA, submission)
    again = annotation.submit(ANA, Submission(item.handout, "b>a>c>d"))
    assert again["status"] == "already_stored" and again["ranking"] == stored["ranking"] == "B > A > C > D"
    with pytest.raises(WorkbenchError, match="already ranked this item as 'B > A > C > D'"):
        annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    assert count(workbench, "rankings") == 1 and count(workbench, "completion_labels") == 1


def test_a_ranking_made_another_way_while_the_hand_out_is_open_is_not_stored_twice(annotation, workbench):
    # an open hand-out is taken as unranked (no look-up); the store's UNIQUE constraint is
    # the guard, and the submission is then checked again as if the item had been closed
    add_comparisons(workbench, 2)
    item = annotation.next_item(ANA)
    workbench.rank(item.comparison_id, "B > A > C > D", "ana")  # an import under her name
    result, following = annotation.submit_and_next(ANA, Submission(item.handout, "b>a>c>d"))
    assert result["status"] == "already_stored" and following.comparison_id != item.comparison_id
    with pytest.raises(WorkbenchError, match="already ranked this item as 'B > A > C > D'"):
        annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    assert count(workbench, "rankings") == 1


def test_a_skip_that_lands_between_reading_and_storing_a_ranking_wins(annotation, workbench, monkeypatch):
    # two tabs: the ranking's hand-out was read as open, then the other tab skipped it
    [comparison_id] = add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    stale = queue.handout_by_token(workbench.store.cursor(), item.handout)
    annotation.skip(ANA, item.handout, "cannot judge")
    monkeypatch.setattr(queue, "handout_by_token", lambda cur, token: stale)
    with pytest.raises(WorkbenchError, match="You skipped this item"):
        annotation.submit_and_next(ANA, Submission(item.handout, "A > B > C > D"))
    assert count(workbench, "rankings") == 0 and count(workbench, "ranking_ranks") == 0
    assert rows(workbench, "SELECT comparison_id FROM skips") == [(comparison_id,)]


def test_submit_and_next_stores_and_hands_out_in_one_commit(annotation, workbench, monkeypatch):
    add_comparisons(workbench, 2)
    item = annotation.next_item(ANA)
    commits = []
    real = workbench.store.transaction

    def counted():
        commits.append(1)
        return real()

    monkeypatch.setattr(workbench.store, "transaction", counted)
    result, following = annotation.submit_and_next(ANA, Submission(item.handout, "A > B > C > D"))
    assert len(commits) == 1
    assert result["status"] == "stored" and result["progress"]["done_total"] == 1
    assert result["progress"]["remaining_for_me"] == 1 and following.comparison_id != item.comparison_id
    assert rows(workbench, "SELECT comparison_id, annotator FROM claims") == [(following.comparison_id, "ana")]


@pytest.mark.parametrize("change, error", [
    ({"ranking": "A > B > C"}, RankingError),
    ({"ranking": "A > B > C > D > E"}, RankingError),
    ({"labels": {"E": {"good": True}}}, WorkbenchError),
    ({"labels": {"A": {"flag": "rude"}}}, WorkbenchError),
    ({"labels": {"A": {"good": "yes"}}}, WorkbenchError),
    ({"ratings": {"A": {"creativity": 3}}}, WorkbenchError),
    ({"ratings": {"A": {"helpfulness": 6}}}, WorkbenchError),
    ({"ratings": {"A": {"helpfulness": True}}}, WorkbenchError),
    ({"client_seconds": -1}, WorkbenchError),
    ({"handout": 999_999}, WorkbenchError),
    ({"handout": "not-a-token"}, WorkbenchError),
    ({"handout": None}, WorkbenchError),
])
def test_a_refused_submission_stores_nothing_and_keeps_the_claim(annotation, workbench, change, error):
    add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    fields = {"handout": item.handout, "ranking": "A > B > C > D"} | change
    with pytest.raises(error):
        annotation.submit(ANA, Submission(**fields))
    for table in ("rankings", "ranking_ranks", "completion_labels", "ratings"):
        assert count(workbench, table) == 0
    assert annotation.next_item(ANA).comparison_id == item.comparison_id


def test_a_skip_needs_a_reason(annotation, workbench):
    add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    with pytest.raises(WorkbenchError, match="Say why"):
        annotation.skip(ANA, item.handout, "   ")
    annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    with pytest.raises(WorkbenchError, match="already ranked"):
        annotation.skip(ANA, item.handout, "changed my mind")
    assert count(workbench, "skips") == 0


def test_only_an_item_handed_to_you_can_be_ranked_or_skipped(annotation, workbench):
    queued = add_comparisons(workbench, 2)
    with workbench.store.transaction() as cur:
        prompts.add_prompts(cur, "elsewhere", [[{"role": "user", "content": "Not queued?"}]], source="test")
        [(elsewhere_prompt,)] = cur.execute("SELECT id FROM prompts WHERE prompt_set = 'elsewhere'").fetchall()
        outside = comparisons.add(cur, elsewhere_prompt, [NewCompletion("x", "base"), NewCompletion("y", "base")])
    annotation.set_config(RESEARCHER, prompt_sets=["default"])
    anas = annotation.next_item(ANA)
    not_handed = "That item was not handed to you"
    # ben: ana's item, an id of the queue's, one outside the queue's prompt sets, a made-up token
    for other in (anas.handout, queued[1], outside, str(outside), "f" * 32, "f" * 1000, None):
        with pytest.raises(WorkbenchError, match=not_handed):
            annotation.submit(BEN, Submission(other, "A > B > C > D", client_seconds=1_000_000))
        with pytest.raises(WorkbenchError, match=not_handed):
            annotation.skip(BEN, other, "I cannot judge this topic")
    for table in ("rankings", "ranking_ranks", "skips"):
        assert count(workbench, table) == 0
    assert annotation.next_item(ANA).handout == anas.handout  # ana's claim is untouched
    assert annotation.submit(ANA, Submission(anas.handout, "A > B > C > D"))["status"] == "stored"


def test_the_time_spent_is_measured_by_the_server_from_the_hand_out(annotation, workbench):
    first, second = add_comparisons(workbench, 2)
    annotation.set_config(RESEARCHER, claim_ttl_s=60)

    def age(token: str, seconds: int) -> None:
        """Move the hand-out `seconds` into the past, as if the annotator had taken that long."""
        workbench.store.cursor().execute(
            f"UPDATE handouts SET handed_at = handed_at - INTERVAL {seconds} SECOND WHERE token = ?", [token])

    item = annotation.next_item(ANA)
    age(item.handout, 42)
    assert annotation.next_item(ANA).handout == item.handout  # a reload keeps the clock running
    annotation.submit(ANA, Submission(item.handout, "A > B > C > D", client_seconds=1_000_000))
    [(seconds,)] = rows(workbench, "SELECT seconds_spent FROM rankings WHERE comparison_id = ?", [first])
    assert 42 <= seconds < 52  # the server's figure; the client's is kept apart
    assert rows(workbench, "SELECT client_seconds FROM handouts WHERE token = ?", [item.handout]) == [(1e6,)]
    assert Reports(workbench).activity(Filters())["per_annotator"]["median_seconds"].tolist() == [round(seconds, 1)]

    # left for longer than the claim lasts, the item is handed out afresh: the clock restarts
    item = annotation.next_item(ANA)
    assert item.comparison_id == second
    age(item.handout, 3600)
    workbench.store.cursor().execute("UPDATE claims SET claimed_at = claimed_at - INTERVAL 61 SECOND")
    assert annotation.next_item(ANA).handout == item.handout
    annotation.submit(ANA, Submission(item.handout, "A > B > C > D"))
    [(seconds,)] = rows(workbench, "SELECT seconds_spent FROM rankings WHERE comparison_id = ?", [second])
    assert 0 <= seconds < 10


def test_the_item_shows_no_comparison_id(annotation, workbench):
    from app.api import item_payload
    from app.tabs.annotate import item_updates

    [comparison_id] = add_comparisons(workbench, 1)
    item = annotation.next_item(ANA)
    payload = item_payload(item)
    assert "comparison_id" not in payload and payload["handout"] == item.handout
    assert len(item.handout) == 32 and item.handout != str(comparison_id)  # opaque: nothing to count up from
    header = item_updates(app_context(workbench, annotation=annotation, pregenerator=SimpleNamespace(status=lambda: {})), item)[1]
    assert "#" not in header and "comparison" not in header


# -- overlap and claims ---------------------------------------------------------------------


def test_overlap_two_hands_one_item_to_two_annotators_and_no_third(annotation, workbench):
    first, second = add_comparisons(workbench, 2)
    annotation.set_config(RESEARCHER, overlap=2)
    anas, bens = annotation.next_item(ANA), annotation.next_item(BEN)
    assert anas.comparison_id == bens.comparison_id == first and anas.handout != bens.handout
    assert annotation.next_item(CAT).comparison_id == second  # both slots of the first are held
    annotation.submit(ANA, Submission(anas.handout, "A > B > C > D"))
    assert annotation.next_item(ANA).comparison_id == second  # never the first again
    annotation.submit(BEN, Submission(bens.handout, "B > A > C > D"))
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
                outcome = annotation.submit(user, Submission(item.handout, "D > C > B > A"))
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
    anas = annotation.next_item(ANA)
    assert anas.comparison_id == comparison_id
    assert annotation.next_item(BEN) is None and annotation.ready() == 0  # ana holds the only slot
    # ana left her tab open and walked away: her claim is now older than the TTL
    workbench.store.cursor().execute("UPDATE claims SET claimed_at = claimed_at - INTERVAL 61 SECOND")
    assert annotation.ready() == 1
    assert annotation.next_item(BEN).comparison_id == comparison_id
    assert rows(workbench, "SELECT annotator FROM claims") == [("ben",)]
    # ana comes back and submits anyway: her work is kept, not thrown away
    assert annotation.submit(ANA, Submission(anas.handout, "A > B > C > D"))["status"] == "stored"


def test_queue_claims_measure_age_with_the_given_clock(workbench):
    [comparison_id] = add_comparisons(workbench, 1)
    start = datetime(2030, 1, 1, 12, 0, 0)
    with workbench.store.transaction() as cur:
        assert queue.next_for(cur, "ana", 1, None, None, 900, now=start).comparison_id == comparison_id
        assert queue.next_for(cur, "ben", 1, None, None, 900, now=start + timedelta(seconds=899)) is None
        assert queue.next_for(cur, "ben", 1, None, None, 900, now=start + timedelta(seconds=901)).comparison_id == comparison_id


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

    def choice(self, options):
        return options[0]


def test_gold_items_are_mixed_in_at_the_gold_rate(annotation, workbench):
    ids = add_comparisons(workbench, 4)
    gold = ids[-1]  # the newest: it would otherwise come last
    assert annotation.mark_gold(RESEARCHER, gold, "d>c>b>a") == "D > C > B > A"
    assert annotation.gold_ids() == [gold]
    with pytest.raises(RankingError):
        annotation.mark_gold(RESEARCHER, gold, "A > B")
    annotation.set_config(RESEARCHER, gold_rate=0.25, overlap=2)

    def take_and_rank(user: User, ranking: str) -> int:
        item = annotation.next_item(user)
        annotation.submit(user, Submission(item.handout, ranking))
        return item.comparison_id

    annotation.rng = FixedDraws(0.9, 0.1, 0.1, 0.9)
    assert take_and_rank(ANA, "A > B > C > D") == ids[0]  # 0.9 >= 0.25: a normal item
    assert take_and_rank(ANA, "D > C > B > A") == gold  # 0.1 < 0.25: the gold item
    assert take_and_rank(ANA, "A > B > C > D") == ids[1]  # gold drawn, but ana has done it

    annotation.rng = FixedDraws(0.1)
    annotation.set_config(RESEARCHER, overlap=1)
    assert take_and_rank(BEN, "A > B > C > D") == gold  # gold ignores the overlap: everybody does it
    assert annotation.gold_agreement(RESEARCHER).to_dict("records") == [
        {"annotator": "ana", "gold_items": 1, "exact_matches": 1},
        {"annotator": "ben", "gold_items": 1, "exact_matches": 0}]

    annotation.mark_gold(RESEARCHER, gold, None)
    assert annotation.gold_ids() == []


def test_gold_items_come_in_random_order(annotation, workbench):
    golds = add_comparisons(workbench, 4)
    for gold in golds:
        annotation.mark_gold(RESEARCHER, gold, "A > B > C > D")
    annotation.set_config(RESEARCHER, gold_rate=1.0)
    orders = []
    for seed in range(4):
        annotation.rng = random.Random(seed)
        user = User(f"seed{seed}", "annotator")
        orders.append(rank_everything(annotation, user))
        assert sorted(orders[-1]) == golds  # every gold item, once each
    assert len({tuple(order) for order in orders}) > 1  # not the order they were made in, each time
    assert any(order[0] != golds[0] for order in orders)


def test_imported_pairs_show_the_chosen_answer_at_a_random_letter(annotation, workbench):
    with workbench.store.transaction() as cur:
        prompts.add_prompts(cur, "pairs", [[{"role": "user", "content": f"Pair {i}?"}] for i in range(12)],
                            source="test")
        ids = [row[0] for row in cur.execute("SELECT id FROM prompts WHERE prompt_set = 'pairs' ORDER BY id").fetchall()]
        comparisons.add_imported_pairs(cur, ids, [f"chosen {i}" for i in range(12)],
                                       [f"rejected {i}" for i in range(12)], "import:pairs.jsonl", rng=random.Random(7))
    annotation.set_config(RESEARCHER, prompt_sets=["pairs"], overlap=2)  # the import's ranking uses one slot
    shown_at = []
    while (item := annotation.next_item(ANA)) is not None:
        chosen = next(i for i, text in enumerate(item.completions) if text.startswith("chosen"))
        shown_at.append(item.letters[chosen])
        # ana ranks the chosen answer first, by the letter she was shown
        annotation.submit(ANA, Submission(item.handout, f"{item.letters[chosen]} > {item.letters[1 - chosen]}"))
    assert len(shown_at) == 12 and set(shown_at) == {"A", "B"}
    # every stored ranking, the import's and ana's, ranks the chosen text first
    assert rows(workbench, "SELECT r.annotator, m.text LIKE 'chosen%', count(*) FROM ranking_ranks rr"
                           " JOIN rankings r ON r.id = rr.ranking_id JOIN completions m ON m.id = rr.completion_id"
                           " WHERE rr.rank = 1 GROUP BY ALL ORDER BY ALL") == [
        ("ana", True, 12), ("import:pairs.jsonl", True, 12)]


# -- pre-generation -------------------------------------------------------------------------


def test_pregenerator_starts_an_empty_queue_with_one_prompt_then_doubles(annotation, workbench):
    """On a fresh home the first comparison must not wait for a full batch (8 prompts x K x
    256 tokens took ~100 s on a CPU): one prompt first, then at most twice what is ready."""
    from rlhf.modeling.generate import Sample

    batches = []

    def sampler(model_dir, conversations, k, params):
        batches.append(len(conversations))
        return [[Sample(f"answer {j}", 3, "eos") for j in range(k)] for _ in conversations]

    annotation.set_config(RESEARCHER, ready_target=16, k=2, max_new_tokens=4)
    generator = PreGenerator(annotation)
    generator.sampler = SimpleNamespace(sample=sampler, close=lambda timeout=10: None)
    while generator.fill_once():
        pass
    assert batches == [1, 2, 6, 7]  # ready 0 -> 1 -> 3 -> 9 -> 16, never past batch_prompts (8)
    assert annotation.ready() == 16


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


def test_every_queue_setting_has_its_help_where_the_queue_tab_reads_it():
    import dataclasses

    from rlhf.collect.annotation import QueueConfig

    helps = {f.name: QueueConfig.help(f.name) for f in dataclasses.fields(QueueConfig)}
    assert all(len(text) > 20 for text in helps.values()), helps
    assert QueueConfig().overlap == 1 and QueueConfig.from_dict(QueueConfig().as_dict()) == QueueConfig()
