"""The annotation API for scripts, for real: `rlhf serve` in a subprocess and
`gradio_client` clients logged in as users of the store. Every test ends by stopping the
server and reading what it stored (rankings, ranks, labels, ratings, skips, settings)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from rlhf.annotation import SETTINGS_KEY
from rlhf.auth import create_user
from rlhf.ranking import RankingError, parse_ranking
from storage import comparisons, prompts, queue
from storage.comparisons import NewCompletion

CROWD = [f"worker{i:02d}" for i in range(20)]
ANNOTATORS = ["ana", "ben", "cy", "dan", "eve", "fay", "gus", *CROWD]
# prompt set -> (number of comparisons, K): each test hands out only its own set
SETS = {"api-submit": (1, 4), "api-refuse": (1, 4), "api-repeat": (2, 3), "api-overlap": (1, 2), "api-crowd": (10, 4)}


def password(name: str) -> str:
    return f"{name}-secret-pw"


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
                comparisons.add(cur, prompt_id, [NewCompletion(text, "base") for text in texts])


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill)


def client(served, name: str) -> Client:
    return Client(served.url, auth=(name, password(name)), verbose=False)


def hand_out(served, prompt_set: str, overlap: int = 1) -> dict:
    """As the researcher, point the queue at one test's prompt set, with no gold items
    mixed in (gold items ignore the prompt sets); returns the settings."""
    return client(served, "rita").predict(overlap=overlap, prompt_sets=[prompt_set], gold_rate=0.0,
                                          api_name="/queue_settings")


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
        Client(served.url, auth=("ana", "not-anas-password"), verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(served.url, auth=("nobody", password("nobody")), verbose=False)
    with pytest.raises(ValueError, match="credentials were not provided"):
        Client(served.url, verbose=False)
    assert client(served, "ana").predict(api_name="/progress")["done_total"] == 0


def test_two_annotators_share_a_comparison_when_overlap_is_two(served):
    settings = hand_out(served, "api-overlap", overlap=2)
    assert (settings["overlap"], settings["prompt_sets"], settings["ready_target"]) == (2, ["api-overlap"], 0)
    dan, eve, fay = (client(served, name) for name in ("dan", "eve", "fay"))
    first = dan.predict(api_name="/next_comparison")
    second = eve.predict(api_name="/next_comparison")
    assert first["comparison_id"] is not None and second["comparison_id"] == first["comparison_id"]
    assert first["letters"] == "AB" and set(first["completions"]) == {"A", "B"}
    third = fay.predict(api_name="/next_comparison")
    assert third["comparison_id"] is None and "No comparison" in third["message"]
    # both slots used by rankings now, not just claims: still nothing for the third
    assert dan.predict(first["comparison_id"], "B > A", api_name="/submit_ranking")["status"] == "stored"
    assert eve.predict(first["comparison_id"], "a=b", api_name="/submit_ranking")["ranking"] == "A = B"
    assert fay.predict(api_name="/next_comparison")["comparison_id"] is None
    assert fay.predict(api_name="/progress")["remaining_for_me"] == 0


def test_a_ranking_with_ties_labels_and_ratings_is_stored_for_the_logged_in_annotator(served):
    hand_out(served, "api-submit")
    ana = client(served, "ana")
    endpoints = ana.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/next_comparison", "/submit_ranking", "/skip_comparison", "/progress", "/queue_settings",
                 "/mark_gold"):
        parameters = {p["parameter_name"] for p in endpoints[name]["parameters"]}
        assert not parameters & {"user", "username", "annotator", "name", "request"}, name  # the login says who
    item = ana.predict(api_name="/next_comparison")
    comparison_id = item["comparison_id"]
    assert item["letters"] == "ABCD"
    assert item["completions"]["C"].startswith("api-submit #") and item["completions"]["C"].endswith(" answer C")
    assert item["dimensions"] == ["helpfulness", "harmlessness", "honesty"]
    result = ana.predict(
        comparison_id, "c > d=b>a", 12.5,
        {"A": {"good": False, "flag": "nonsense"}, "C": {"good": True, "flag": None}},
        {"C": {"helpfulness": 5, "honesty": 4}, "A": {"helpfulness": 1}},
        False, "  A better answer.  ", "close call between B and D",
        api_name="/submit_ranking")
    assert result["status"] == "stored" and result["ranking"] == "C > B = D > A"
    assert result["progress"]["done_total"] == 1

    with served.stopped() as wb:
        cur = wb.store.cursor()
        assert ids_of(wb, "api-submit") == [comparison_id]
        rows = cur.execute("SELECT id, annotator, source, ranking, seconds_spent, better_answer, comment,"
                           " none_acceptable,"
                           " guidelines_version FROM rankings WHERE comparison_id = ?", [comparison_id]).fetchall()
        assert len(rows) == 1
        ranking_id, *stored = rows[0]
        assert stored == ["ana", "human", "C > B = D > A", 12.5, "A better answer.", "close call between B and D",
                          False, 0]
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
    comparison_id = ben.predict(api_name="/next_comparison")["comparison_id"]
    for wrong in ("C > B > A", "A > B > C > D > E", "A > B = B > C > D", "A > B > C > D >", "A >> B > C > D", ""):
        with pytest.raises(AppError) as refused:
            ben.predict(comparison_id, wrong, api_name="/submit_ranking")
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
    first = cy.predict(api_name="/next_comparison")["comparison_id"]
    assert cy.predict(api_name="/next_comparison")["comparison_id"] == first  # a reload resumes the same item
    assert cy.predict(first, "b>a=c", api_name="/submit_ranking")["status"] == "stored"
    again = cy.predict(first, "B > C = A", api_name="/submit_ranking")
    assert (again["status"], again["ranking"]) == ("already_stored", "B > A = C")
    with pytest.raises(AppError, match="already ranked"):
        cy.predict(first, "A > B > C", api_name="/submit_ranking")

    second = cy.predict(api_name="/next_comparison")["comparison_id"]
    assert second not in (None, first)
    assert cy.predict(second, "I cannot judge this topic", api_name="/skip_comparison")["status"] == "skipped"
    assert cy.predict(second, "I cannot judge this topic", api_name="/skip_comparison")["status"] == "already_skipped"
    assert cy.predict(api_name="/next_comparison")["comparison_id"] is None
    progress = cy.predict(api_name="/progress")
    assert (progress["done_total"], progress["skipped"], progress["remaining_for_me"]) == (1, 1, 0)
    # a skip uses no slot: someone else still gets the skipped comparison
    assert gus.predict(api_name="/next_comparison")["comparison_id"] == second

    with served.stopped() as wb:
        cur = wb.store.cursor()
        assert sorted(ids_of(wb, "api-repeat")) == sorted([first, second])
        assert cur.execute("SELECT comparison_id, annotator, ranking FROM rankings WHERE comparison_id IN (?, ?)",
                           [first, second]).fetchall() == [(first, "cy", "B > A = C")]
        assert cur.execute("SELECT count(*) FROM ranking_ranks rr JOIN rankings r ON r.id = rr.ranking_id"
                           " WHERE r.comparison_id = ?", [first]).fetchall()[0][0] == 3
        assert cur.execute("SELECT comparison_id, annotator, reason FROM skips").fetchall() == \
            [(second, "cy", "I cannot judge this topic")]


def test_twenty_annotators_at_once_lose_nothing_and_overfill_nothing(served):
    hand_out(served, "api-crowd", overlap=2)  # 10 comparisons x 2 slots = 20 annotators
    with ThreadPoolExecutor(len(CROWD)) as pool:
        clients = list(pool.map(lambda name: client(served, name), CROWD))
    start = threading.Barrier(len(CROWD))

    def annotate(args):
        name, api = args
        start.wait(timeout=60)
        item = api.predict(api_name="/next_comparison")
        assert item["comparison_id"] is not None, f"{name} got nothing: {item}"
        ranking = "D > C > B > A" if name[-1] in "02468" else "a=b>c=d"
        result = api.predict(item["comparison_id"], ranking, 1.0, api_name="/submit_ranking")
        return name, item["comparison_id"], result

    with ThreadPoolExecutor(len(CROWD)) as pool:
        handed = list(pool.map(annotate, zip(CROWD, clients)))
    assert all(result["status"] == "stored" for _, _, result in handed)
    per_comparison = {}
    for name, comparison_id, _ in handed:
        per_comparison.setdefault(comparison_id, []).append(name)
    assert sorted(len(names) for names in per_comparison.values()) == [2] * 10

    with served.stopped() as wb:
        cur = wb.store.cursor()
        crowd_ids = ids_of(wb, "api-crowd")
        assert sorted(per_comparison) == crowd_ids
        stored = cur.execute("SELECT comparison_id, annotator, ranking FROM rankings WHERE comparison_id IN"
                             f" ({', '.join('?' * len(crowd_ids))}) ORDER BY ALL", crowd_ids).fetchall()
        assert len(stored) == 20  # none lost, none twice
        assert sorted((c, a) for c, a, _ in stored) == sorted((c, a) for a, c, _ in handed)
        assert {a for _, a, _ in stored} == set(CROWD)
        assert {r for _, _, r in stored} == {"D > C > B > A", "A = B > C = D"}
        assert cur.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM rankings GROUP BY comparison_id)"
                           ).fetchall()[0][0] <= 2
        assert cur.execute("SELECT count(*) FROM ranking_ranks rr JOIN rankings r ON r.id = rr.ranking_id WHERE"
                           f" r.comparison_id IN ({', '.join('?' * len(crowd_ids))})", crowd_ids).fetchall()[0][0] == 80
