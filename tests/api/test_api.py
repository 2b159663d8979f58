"""The annotation API for scripts, for real: `rlhf serve` in a subprocess and
`gradio_client` clients logged in as users of the store. Every test ends by stopping the
server and reading what it stored (rankings, ranks, labels, ratings, skips, settings)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client.exceptions import AppError

from rlhf.collect.annotation import SETTINGS_KEY
from rlhf.auth import create_user
from rlhf.preference.ranking import RankingError, parse_ranking
from storage import comparisons, prompts, queue
from storage.comparisons import NewCompletion
from helpers import client, connect, password

CROWD = [f"worker{i:02d}" for i in range(20)]
ANNOTATORS = ["ana", "ben", "cy", "dan", "eve", "fay", "gus", "hal", "ivy", *CROWD]
# prompt set -> (number of comparisons, K): each test hands out only its own set
SETS = {"api-submit": (1, 4), "api-refuse": (1, 4), "api-repeat": (2, 3), "api-overlap": (1, 2), "api-crowd": (10, 4),
        "api-foreign": (2, 2), "api-outside": (1, 2)}
# what an item handed to an annotator holds: no comparison id, nothing that tells a gold item
ITEM_KEYS = {"handout", "prompt", "messages", "letters", "completions", "guidelines_version", "dimensions", "progress"}


IDS: dict[str, list[int]] = {}  # prompt set -> its comparisons, as fill made them


def fill(wb) -> None:
    for name in ANNOTATORS:
        create_user(wb.store, name, "annotator", password(name))
    create_user(wb.store, "rita", "researcher", password("rita"))
    with wb.store.transaction() as cur:
        for prompt_set, (n, k) in SETS.items():
            prompts.add_prompts(cur, prompt_set, [[{"role": "user", "content": f"{prompt_set} prompt {i}"}]
                                                  for i in range(n)], source="test")
            for (prompt_id,) in cur.execute("SELECT id FROM prompts WHERE prompt_set = ? ORDER BY id",
                                            [prompt_set]).fetchall():
                texts = [f"{prompt_set} #{prompt_id} answer {chr(65 + i)}" for i in range(k)]
                IDS.setdefault(prompt_set, []).append(
                    comparisons.add(cur, prompt_id, [NewCompletion(text, "base") for text in texts]))


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill)


def hand_out(served, prompt_set: str, overlap: int = 1) -> dict:
    """As the researcher, point the queue at one test's prompt set, with no gold items
    mixed in (gold items ignore the prompt sets); returns the settings."""
    return client(served, "rita").predict(overlap=overlap, prompt_sets=[prompt_set], gold_rate=0.0,
                                          api_name="/queue_settings")


def handed(wb, token: str) -> int:
    """The comparison a hand-out token stands for (the server's record; clients never see it)."""
    return wb.store.cursor().execute("SELECT comparison_id FROM handouts WHERE token = ?", [token]).fetchall()[0][0]


def ids_of(wb, prompt_set: str) -> list[int]:
    return [row[0] for row in wb.store.cursor().execute(
        "SELECT c.id FROM comparisons c JOIN prompts p ON p.id = c.prompt_id WHERE p.prompt_set = ? ORDER BY c.id",
        [prompt_set]).fetchall()]


def grammar_sentence(text: str, k: int) -> str:
    with pytest.raises(RankingError) as refused:
        parse_ranking(text, k)
    return str(refused.value)


def test_only_a_right_password_logs_in(served):
    with pytest.raises(ValueError, match="Could not login"):
        connect(served.url, ("ana", "not-anas-password"))
    with pytest.raises(ValueError, match="Could not login"):
        connect(served.url, ("nobody", password("nobody")))
    with pytest.raises(ValueError, match="credentials were not provided"):
        connect(served.url)
    assert client(served, "ana").predict(api_name="/progress")["done_total"] == 0


def test_two_annotators_share_a_comparison_when_overlap_is_two(served):
    settings = hand_out(served, "api-overlap", overlap=2)
    assert (settings["overlap"], settings["prompt_sets"], settings["ready_target"]) == (2, ["api-overlap"], 0)
    dan, eve, fay = (client(served, name) for name in ("dan", "eve", "fay"))
    first = dan.predict(api_name="/next_comparison")
    second = eve.predict(api_name="/next_comparison")
    assert first["handout"] is not None and second["handout"] not in (None, first["handout"])
    assert second["completions"] == first["completions"]  # the same comparison, one hand-out each
    assert first["letters"] == "AB" and set(first["completions"]) == {"A", "B"}
    third = fay.predict(api_name="/next_comparison")
    assert third["handout"] is None and "No comparison" in third["message"]
    # both slots used by rankings now, not just claims: still nothing for the third
    assert dan.predict(first["handout"], "B > A", api_name="/submit_ranking")["status"] == "stored"
    assert eve.predict(second["handout"], "a=b", api_name="/submit_ranking")["ranking"] == "A = B"
    assert fay.predict(api_name="/next_comparison")["handout"] is None
    assert fay.predict(api_name="/progress")["remaining_for_me"] == 0


def test_a_ranking_with_ties_labels_and_ratings_is_stored_for_the_logged_in_annotator(served):
    hand_out(served, "api-submit")
    ana = client(served, "ana")
    endpoints = ana.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/next_comparison", "/submit_ranking", "/skip_comparison", "/progress", "/queue_settings",
                 "/mark_gold"):
        parameters = {p["parameter_name"] for p in endpoints[name]["parameters"]}
        assert not parameters & {"user", "username", "annotator", "name", "request"}, name  # the login says who
    assert [p["parameter_name"] for p in endpoints["/submit_ranking"]["parameters"]][0] == "handout"
    item = ana.predict(api_name="/next_comparison")
    assert set(item) == ITEM_KEYS  # no comparison id
    assert item["letters"] == "ABCD"
    assert item["completions"]["C"].startswith("api-submit #") and item["completions"]["C"].endswith(" answer C")
    assert item["dimensions"] == ["helpfulness", "harmlessness", "honesty"]
    result = ana.predict(
        item["handout"], "c > d=b>a", 12.5,
        {"A": {"good": False, "flag": "nonsense"}, "C": {"good": True, "flag": None}},
        {"C": {"helpfulness": 5, "honesty": 4}, "A": {"helpfulness": 1}},
        False, "  A better answer.  ", "close call between B and D",
        api_name="/submit_ranking")
    assert result["status"] == "stored" and result["ranking"] == "C > B = D > A"
    assert result["progress"]["done_total"] == 1

    with served.stopped() as wb:
        cur = wb.store.cursor()
        comparison_id = handed(wb, item["handout"])
        assert ids_of(wb, "api-submit") == [comparison_id]
        rows = cur.execute("SELECT id, annotator, source, ranking, better_answer, comment,"
                           " none_acceptable,"
                           " guidelines_version FROM rankings WHERE comparison_id = ?", [comparison_id]).fetchall()
        assert len(rows) == 1
        ranking_id, *stored = rows[0]
        assert stored == ["ana", "human", "C > B = D > A", "A better answer.", "close call between B and D",
                          False, 0]
        # the time spent is the server's, from the hand-out; the client's 12.5 is kept apart
        [(seconds, client_seconds)] = cur.execute(
            "SELECT r.seconds_spent, h.client_seconds FROM rankings r JOIN handouts h"
            " ON h.comparison_id = r.comparison_id AND h.annotator = r.annotator WHERE r.id = ?",
            [ranking_id]).fetchall()
        assert 0 <= seconds < 12.5 and client_seconds == 12.5
        ranks = dict(cur.execute("SELECT m.letter, rr.rank FROM ranking_ranks rr JOIN completions m"
                                 " ON m.id = rr.completion_id WHERE rr.ranking_id = ?", [ranking_id]).fetchall())
        assert ranks == {"C": 1, "B": 2, "D": 2, "A": 3}
        labels = cur.execute("SELECT m.letter, l.good, l.flag FROM completion_labels l JOIN completions m"
                             " ON m.id = l.completion_id WHERE l.ranking_id = ? ORDER BY m.letter",
                             [ranking_id]).fetchall()
        assert labels == [("A", False, "nonsense"), ("C", True, None)]
        ratings = cur.execute("SELECT m.letter, r.dimension, r.score FROM ratings r JOIN completions m"
                              " ON m.id = r.completion_id WHERE r.ranking_id = ? ORDER BY ALL", [ranking_id]).fetchall()
        assert ratings == [("A", "helpfulness", 1), ("C", "helpfulness", 5), ("C", "honesty", 4)]
        assert cur.execute("SELECT count(*) FROM claims WHERE annotator = 'ana'").fetchall()[0][0] == 0


def test_refusals_store_nothing_and_change_nothing(served):
    before = hand_out(served, "api-refuse")
    ben, rita = client(served, "ben"), client(served, "rita")
    token = ben.predict(api_name="/next_comparison")["handout"]
    [comparison_id] = IDS["api-refuse"]  # researchers may name comparisons; annotators never see the ids
    for wrong in ("C > B > A", "A > B > C > D > E", "A > B = B > C > D", "A > B > C > D >", "A >> B > C > D", ""):
        with pytest.raises(AppError) as refused:
            ben.predict(token, wrong, api_name="/submit_ranking")
        assert str(refused.value) == grammar_sentence(wrong, 4)
    with pytest.raises(AppError, match="^Only researchers or admins may do this, and ben is an annotator.$"):
        ben.predict(overlap=3, api_name="/queue_settings")
    with pytest.raises(AppError, match="^Only researchers or admins may do this, and ben is an annotator.$"):
        ben.predict(comparison_id, "A > B > C > D", api_name="/mark_gold")
    unchanged = rita.predict(api_name="/queue_settings")  # no changes asked: reads them
    assert {key: unchanged[key] for key in ("overlap", "prompt_sets", "gold_rate", "ready_target", "k")} == \
        {key: before[key] for key in ("overlap", "prompt_sets", "gold_rate", "ready_target", "k")}
    assert unchanged["overlap"] == 1
    # the researcher may; a bad value is refused whole
    with pytest.raises(AppError, match="overlap must be a whole number"):
        rita.predict(overlap=0, gold_rate=0.5, api_name="/queue_settings")
    changed = rita.predict(gold_rate=0.25, api_name="/queue_settings")
    assert (changed["gold_rate"], changed["overlap"], changed["prompt_sets"]) == (0.25, 1, ["api-refuse"])
    assert rita.predict(comparison_id, "d>c=b>a", api_name="/mark_gold") == {"comparison_id": comparison_id,
                                                                               "gold": "D > B = C > A"}

    with served.stopped() as wb:
        cur = wb.store.cursor()
        assert cur.execute("SELECT count(*) FROM rankings WHERE annotator = 'ben' OR comparison_id = ?",
                           [comparison_id]).fetchall()[0][0] == 0
        assert cur.execute("SELECT count(*) FROM ranking_ranks rr JOIN completions m ON m.id = rr.completion_id"
                           " WHERE m.comparison_id = ?", [comparison_id]).fetchall()[0][0] == 0
        stored = queue.get_setting(cur, SETTINGS_KEY)
        assert (stored["overlap"], stored["gold_rate"], stored["prompt_sets"]) == (1, 0.25, ["api-refuse"])
        assert queue.gold_ids(cur) == [comparison_id]
        assert cur.execute("SELECT gold_ranking FROM comparisons WHERE id = ?", [comparison_id]).fetchall()[0][0] \
            == "D > B = C > A"


def test_a_repeated_ranking_is_stored_once_and_a_skipped_item_is_not_handed_back(served):
    hand_out(served, "api-repeat")
    cy, gus = client(served, "cy"), client(served, "gus")
    first = cy.predict(api_name="/next_comparison")["handout"]
    assert cy.predict(api_name="/next_comparison")["handout"] == first  # a reload resumes the same item
    assert cy.predict(first, "b>a=c", api_name="/submit_ranking")["status"] == "stored"
    again = cy.predict(first, "B > C = A", api_name="/submit_ranking")
    assert (again["status"], again["ranking"]) == ("already_stored", "B > A = C")
    with pytest.raises(AppError, match="already ranked"):
        cy.predict(first, "A > B > C", api_name="/submit_ranking")

    skipped = cy.predict(api_name="/next_comparison")
    second = skipped["handout"]
    assert second not in (None, first)
    assert cy.predict(second, "I cannot judge this topic", api_name="/skip_comparison")["status"] == "skipped"
    assert cy.predict(second, "I cannot judge this topic", api_name="/skip_comparison")["status"] == "already_skipped"
    with pytest.raises(AppError, match="^You skipped this item, so it cannot be ranked"):
        cy.predict(second, "A > B > C", api_name="/submit_ranking")
    assert cy.predict(api_name="/next_comparison")["handout"] is None
    progress = cy.predict(api_name="/progress")
    assert (progress["done_total"], progress["skipped"], progress["remaining_for_me"]) == (1, 1, 0)
    # a skip uses no slot: someone else still gets the skipped comparison
    assert gus.predict(api_name="/next_comparison")["completions"] == skipped["completions"]

    with served.stopped() as wb:
        cur = wb.store.cursor()
        first, second = handed(wb, first), handed(wb, second)
        assert sorted(ids_of(wb, "api-repeat")) == sorted([first, second])
        assert cur.execute("SELECT comparison_id, annotator, ranking FROM rankings WHERE comparison_id IN (?, ?)",
                           [first, second]).fetchall() == [(first, "cy", "B > A = C")]
        assert cur.execute("SELECT count(*) FROM ranking_ranks rr JOIN rankings r ON r.id = rr.ranking_id"
                           " WHERE r.comparison_id = ?", [first]).fetchall()[0][0] == 3
        assert cur.execute("SELECT comparison_id, annotator, reason FROM skips").fetchall() == \
            [(second, "cy", "I cannot judge this topic")]


def test_twenty_annotators_at_once_lose_nothing_and_overfill_nothing(served):
    hand_out(served, "api-crowd", overlap=2)  # 10 comparisons x 2 slots = 20 annotators
    # signed in one after another: the server checks passwords two at a time (scrypt), so 20
    # at once would wait past the client's 5 s login timeout on a loaded machine
    clients = [client(served, name) for name in CROWD]
    start = threading.Barrier(len(CROWD))

    def annotate(args):
        name, api = args
        start.wait(timeout=60)
        item = api.predict(api_name="/next_comparison")
        assert item["handout"] is not None, f"{name} got nothing: {item}"
        ranking = "D > C > B > A" if name[-1] in "02468" else "a=b>c=d"
        result = api.predict(item["handout"], ranking, 1.0, api_name="/submit_ranking")
        return name, item["handout"], result

    with ThreadPoolExecutor(len(CROWD)) as pool:
        handed_out = list(pool.map(annotate, zip(CROWD, clients)))
    assert all(result["status"] == "stored" for _, _, result in handed_out)

    with served.stopped() as wb:
        cur = wb.store.cursor()
        pairs = [(handed(wb, token), name) for name, token, _ in handed_out]  # (comparison, annotator)
        per_comparison = {}
        for comparison_id, name in pairs:
            per_comparison.setdefault(comparison_id, []).append(name)
        assert sorted(len(names) for names in per_comparison.values()) == [2] * 10
        crowd_ids = ids_of(wb, "api-crowd")
        assert sorted(per_comparison) == crowd_ids
        stored = cur.execute("SELECT comparison_id, annotator, ranking FROM rankings WHERE comparison_id IN"
                             f" ({', '.join('?' * len(crowd_ids))}) ORDER BY ALL", crowd_ids).fetchall()
        assert len(stored) == 20  # none lost, none twice
        assert sorted((c, a) for c, a, _ in stored) == sorted(pairs)
        assert {a for _, a, _ in stored} == set(CROWD)
        assert {r for _, _, r in stored} == {"D > C > B > A", "A = B > C = D"}
        assert cur.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM rankings GROUP BY comparison_id)"
                           ).fetchall()[0][0] <= 2
        assert cur.execute("SELECT count(*) FROM ranking_ranks rr JOIN rankings r ON r.id = rr.ranking_id WHERE"
                           f" r.comparison_id IN ({', '.join('?' * len(crowd_ids))})", crowd_ids).fetchall()[0][0] == 80


def test_only_what_was_handed_out_can_be_ranked_or_skipped(served):
    """The issue's reproduction: an annotator ranks a comparison never handed to them,
    outside the queue's prompt sets, saying it took 1,000,000 s; and one ranks or skips
    another annotator's item. Each is refused with one sentence and stores nothing; the
    time stored for a real ranking is the server's."""
    hand_out(served, "api-foreign")
    hal, ivy = client(served, "hal"), client(served, "ivy")
    [outside] = IDS["api-outside"]
    not_handed = "^That item was not handed to you: rank or skip only the item the queue gave you"
    for guess in (outside, str(outside), "0" * 32, ""):
        with pytest.raises(AppError, match=not_handed):
            hal.predict(guess, "A > B", 1_000_000, api_name="/submit_ranking")
        with pytest.raises(AppError, match=not_handed):
            hal.predict(guess, "I cannot judge this topic", api_name="/skip_comparison")
    ivys = ivy.predict(api_name="/next_comparison")
    with pytest.raises(AppError, match=not_handed):
        hal.predict(ivys["handout"], "B > A", 1_000_000, api_name="/submit_ranking")
    with pytest.raises(AppError, match=not_handed):
        hal.predict(ivys["handout"], "I cannot judge this topic", api_name="/skip_comparison")
    # ivy's own ranking is stored, with the server's time; and the next item holds no id either
    result = ivy.predict(ivys["handout"], "B > A", 1_000_000, fetch_next=True, api_name="/submit_ranking")
    assert result["status"] == "stored" and set(result["next"]) == ITEM_KEYS
    assert hal.predict(api_name="/progress")["done_total"] == 0

    with served.stopped() as wb:
        cur = wb.store.cursor()
        assert cur.execute("SELECT count(*) FROM rankings WHERE annotator = 'hal' OR comparison_id = ?",
                           [outside]).fetchall() == [(0,)]
        assert cur.execute("SELECT count(*) FROM skips WHERE annotator IN ('hal', 'ivy')").fetchall() == [(0,)]
        [(comparison_id, seconds)] = cur.execute(
            "SELECT comparison_id, seconds_spent FROM rankings WHERE annotator = 'ivy'").fetchall()
        assert comparison_id == handed(wb, ivys["handout"]) and comparison_id in IDS["api-foreign"]
        assert 0 <= seconds < 600  # measured from the hand-out, not the 1,000,000 s the client sent
        assert cur.execute("SELECT client_seconds FROM handouts WHERE token = ?",
                           [ivys["handout"]]).fetchall() == [(1_000_000.0,)]
