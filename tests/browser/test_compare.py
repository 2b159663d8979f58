"""Comparing versions (`rlhf.compare.service`, the Compare tab and its endpoints) on tiny models:
`base` is the tiny random Llama, `parrot` answers every prompt with hostile HTML (see
`save_parrot`), `rm` is a random reward model. The service: the least-played pair, blind
battles revealed only after the vote, the voter stored, the leaderboard and the votes'
export. Served (`rlhf serve` in a subprocess): an annotator is refused on every compare
endpoint; a researcher compares and battles through the API; and in Chromium a researcher
votes in one arena battle whose hostile answer shows as text."""

from __future__ import annotations

import json
import random
import shutil

import pandas as pd
import pytest
from gradio_client.exceptions import AppError

from app.render import render
from app.tabs.compare import answer_markdown, heatmap_html
from rlhf.auth import User, create_user
from rlhf.compare.service import Compare, CompareError
from rlhf.home import BASE_VERSION
from rlhf.collect.workbench import Workbench
from rlhf.versions import VersionError
from storage import arena as arena_store

from conftest import make_home
from helpers import RESEARCHER, register, save_parrot, save_reward_model
from helpers import password, client, log_in

HOSTILE = "<svg onload=pwned()> and **bold** too"  # what the parrot says, token by token
RITA = RESEARCHER
ROY = User("roy", "researcher")  # a second researcher, for a battle another one voted in
FAST = 20  # max new tokens: the parrot says 16, the random base model rambles on


def fill_models(wb: Workbench) -> None:
    """The parrot and the reward model, next to the home's base model."""
    base_dir = wb.home.model_dir(BASE_VERSION)
    save_parrot(wb.home.model_dir("parrot"), base_dir, HOSTILE)
    save_reward_model(wb.home.model_dir("rm"), base_dir)
    register(wb, "parrot", "policy", BASE_VERSION)
    register(wb, "rm", "reward")


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir):
    home = make_home(tmp_path_factory.mktemp("compare") / "home", tiny_model_dir)
    shutil.copytree(home.model_dir(BASE_VERSION), home.model_dir("copy"))
    with Workbench(home) as wb:
        fill_models(wb)
        register(wb, "copy", "policy", BASE_VERSION)
    return home


@pytest.fixture
def compare(home):
    with Workbench(home) as wb:
        with wb.store.transaction() as cur:
            cur.execute("DELETE FROM arena_battles")
        yield Compare(wb, rng=random.Random(0))


def add_votes(compare: Compare, pair: tuple[str, str], votes: str, texts=("left answer", "right answer")) -> None:
    """Battles between `pair` (shown in that order), one per letter of `votes`:
    a, b, t (tie) or x (both bad)."""
    with compare.wb.store.transaction() as cur:
        for letter in votes:
            arena_store.add_battle(cur, None, "a prompt", *pair, *texts,
                                   {"a": "a", "b": "b", "t": "tie", "x": "both_bad"}[letter], "tester")


# -- the service ------------------------------------------------------------------------------


def test_the_least_played_pair_comes_first(compare):
    assert compare.next_pair() == ("base", "copy")  # none played: alphabetical
    add_votes(compare, ("base", "copy"), "a")
    add_votes(compare, ("parrot", "base"), "bt")  # whichever side each was shown on
    assert compare.next_pair() == ("copy", "parrot")
    counts = compare.pair_counts()
    assert counts[["model_1", "model_2", "battles"]].values.tolist() == [
        ["copy", "parrot", 0], ["base", "copy", 1], ["base", "parrot", 2]]
    assert counts.iloc[2][["wins_1", "wins_2", "ties"]].tolist() == [1, 0, 1]


def test_a_blind_battle_reveals_the_names_only_after_the_vote_and_stores_the_voter(compare):
    battle = compare.start_battle(RITA, "parrot", "base", text="Say something.", max_new_tokens=FAST)
    assert set(battle) == {"battle", "prompt", "prompt_id", "a", "b", "chosen_by"}  # no names
    assert battle["chosen_by"] == "researcher" and battle["prompt"] == "Say something."
    assert HOSTILE in (battle["a"], battle["b"])
    with pytest.raises(CompareError, match="opened by someone else"):
        compare.vote(ROY, battle["battle"], "a")
    with pytest.raises(CompareError, match="A vote is A, B, tie or both_bad, not 'C'"):
        compare.vote(RITA, battle["battle"], "C")
    assert compare.battles().empty
    reveal = compare.vote(RITA, battle["battle"], "A")
    parrot_side = "a" if battle["a"] == HOSTILE else "b"
    assert reveal[f"model_{parrot_side}"] == "parrot" and {reveal["model_a"], reveal["model_b"]} == {"parrot", "base"}
    [stored] = compare.battles().to_dict("records")
    assert (stored["id"], stored["vote"], stored["voter"], stored["model_a"], stored["model_b"]) == \
        (reveal["battle_id"], "a", "rita", reveal["model_a"], reveal["model_b"])
    assert (stored["completion_a"], stored["completion_b"]) == (battle["a"], battle["b"])
    assert stored["prompt_text"] == "Say something." and pd.isna(stored["prompt_id"])
    with pytest.raises(CompareError, match="not open"):
        compare.vote(RITA, battle["battle"], "b")


def test_battles_come_in_a_random_order_from_the_least_played_pair_and_a_prompt_set(compare):
    add_votes(compare, ("base", "copy"), "a")
    add_votes(compare, ("copy", "parrot"), "a")
    orders = set()
    for _ in range(10):  # a fair coin (seeded) shows both faces well before ten tosses
        battle = compare.start_battle(RITA, prompt_set="default", max_new_tokens=FAST)
        assert battle["chosen_by"] == "least_played" and battle["prompt_id"] is not None
        orders.add("parrot first" if battle["a"] == HOSTILE else "parrot second")
        reveal = compare.vote(RITA, battle["battle"], "tie")
        assert {reveal["model_a"], reveal["model_b"]} == {"base", "parrot"}
        compare.wb.store.cursor().execute("DELETE FROM arena_battles WHERE id = ?", [reveal["battle_id"]])
        if len(orders) == 2:
            break
    assert orders == {"parrot first", "parrot second"}


@pytest.mark.parametrize("pair, words", [
    (("base", None), "Name both versions of the pair"),
    (("base", "base"), "Choose two different versions"),
    (("base", "rm"), "'rm' is a reward model; the second version must be a policy version."),
    (("base", "nope"), "There is no model version 'nope'"),
])
def test_a_bad_battle_is_refused_in_one_sentence(compare, pair, words):
    with pytest.raises((CompareError, VersionError), match=words.replace("(", r"\(")):
        compare.start_battle(RITA, *pair, text="hi")


def test_side_by_side_shows_both_answers_with_scores_only_under_a_reward_model(compare):
    shown = compare.side_by_side("base", "parrot", text="Hello?", reward="rm", max_new_tokens=FAST, seed=3)
    assert (shown["a"]["version"], shown["b"]["version"], shown["reward"]) == ("base", "parrot", "rm")
    assert shown["b"]["text"] == HOSTILE and shown["b"]["finish_reason"] == "eos"
    assert isinstance(shown["a"]["score"], float) and isinstance(shown["b"]["score"], float)
    again = compare.side_by_side("base", "parrot", text="Hello?", max_new_tokens=FAST, seed=3)
    assert again["a"]["text"] == shown["a"]["text"] and again["a"]["score"] is None  # seeded; no reward model
    prompt_id, stored_text = compare.set_prompts("default").iloc[1]
    chosen = compare.side_by_side("parrot", "parrot", prompt_id=int(prompt_id), max_new_tokens=FAST)
    assert chosen["prompt"] == stored_text and chosen["prompt_id"] == prompt_id and chosen["prompt_set"] == "default"
    with pytest.raises(CompareError, match="Type a prompt, or choose one"):
        compare.side_by_side("base", "parrot", text="  ")
    with pytest.raises(VersionError, match="'parrot' is a policy version; the reward version must be a reward model."):
        compare.side_by_side("base", "parrot", text="hi", reward="parrot")


def test_the_leaderboard_heat_map_and_the_raw_votes(compare, tmp_path):
    add_votes(compare, ("parrot", "base"), "aaatb", texts=("=HYPERLINK(\"http://x\")", "<b>plain</b>"))
    add_votes(compare, ("copy", "parrot"), "bx")
    board = compare.leaderboard(rounds=200)
    assert board["model"].tolist()[0] == "parrot" and set(board["model"]) == {"base", "copy", "parrot"}
    assert board.set_index("model").loc["parrot", ["battles", "wins", "ties", "both_bad", "losses"]].tolist() == \
        [7, 4, 1, 1, 1]
    assert (board["ci_low"] <= board["rating"]).all() and (board["rating"] <= board["ci_high"]).all()
    rates = compare.win_rates()
    assert rates.loc["parrot", "base"] == pytest.approx(3.5 / 5) and rates.loc["copy", "parrot"] == pytest.approx(0.25)
    table = heatmap_html(rates)
    assert "<td style=\"background:hsl(84, 65%, 78%)\">0.70</td>" in table and table.count("<tr>") == 4

    path, rows = compare.export_battles(tmp_path / "votes.csv")
    frame = pd.read_csv(path)
    assert rows == 7 and len(frame) == 7 and set(frame["voter"]) == {"tester"}
    assert frame["completion_a"].iloc[0] == "'=HYPERLINK(\"http://x\")"  # not a formula in a spreadsheet
    path, rows = compare.export_battles(tmp_path / "votes", "jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.suffix == ".jsonl" and rows == len(records) == 7
    assert records[0]["completion_a"] == "=HYPERLINK(\"http://x\")" and records[0]["completion_b"] == "<b>plain</b>"
    assert records[0]["voter"] == "tester" and records[-1]["vote"] == "both_bad"
    with pytest.raises(CompareError, match="Battles export as csv or jsonl"):
        compare.export_battles(tmp_path / "votes.xlsx")


def test_model_text_is_rendered_as_text():
    shown = render(answer_markdown("Answer A", "<script>x()</script> **bold** `<b>`", "reward 0.1"))
    assert "&lt;script&gt;x()&lt;/script&gt;" in shown and "<strong>bold</strong>" in shown
    assert "<code>&lt;b&gt;</code>" in shown and "<em>reward 0.1</em>" in shown and "<h4>Answer A</h4>" in shown
    assert "<script>" not in shown and "<b>" not in shown
    assert "&lt;img" in heatmap_html(pd.DataFrame([[float("nan")]], index=["<img>"], columns=["<img>"]))


# -- served: the endpoints and the page -------------------------------------------------------

USERS = {"rita": "researcher", "ana": "annotator"}
ENDPOINTS = {  # every compare endpoint, with arguments that would work for a researcher
    "/compare_versions": ("base", "parrot", "hi"), "/arena_battle": (), "/arena_vote": ("token", "a"),
    "/arena_leaderboard": (), "/arena_battles": (), "/evaluate_versions": ("base", "parrot"),
    "/list_evaluations": (),
}


def fill(wb: Workbench) -> None:
    for name, role in USERS.items():
        create_user(wb.store, name, role, password(name))
    fill_models(wb)


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill, with_model=True)


def test_an_annotator_is_refused_on_every_compare_endpoint(served):
    ana = client(served, "ana")
    for endpoint, args in ENDPOINTS.items():
        with pytest.raises(AppError) as refused:
            ana.predict(*args, api_name=endpoint)
        assert "Only researchers or admins may do this, and ana is an annotator." in str(refused.value), endpoint
    rita = client(served, "rita")
    assert rita.predict(api_name="/arena_battles") == [] and rita.predict(api_name="/list_evaluations") == []


def test_a_researcher_compares_and_battles_through_the_api(served):
    rita = client(served, "rita")
    shown = rita.predict("base", "parrot", "Hello?", None, None, "rm", FAST, api_name="/compare_versions")
    assert shown["b"]["text"] == HOSTILE and shown["a"]["version"] == "base" and shown["b"]["score"] is not None
    battle = rita.predict(None, None, "Hello?", None, None, FAST, api_name="/arena_battle")
    assert set(battle) == {"battle", "prompt", "prompt_id", "a", "b", "chosen_by"}
    reveal = rita.predict(battle["battle"], "both bad", api_name="/arena_vote")
    assert reveal["vote"] == "both_bad" and reveal["voter"] == "rita"
    with pytest.raises(AppError, match="not open"):
        rita.predict(battle["battle"], "a", api_name="/arena_vote")
    [stored] = rita.predict(api_name="/arena_battles")
    assert (stored["voter"], stored["model_a"], stored["vote"]) == ("rita", reveal["model_a"], "both_bad")
    board = rita.predict(10, api_name="/arena_leaderboard")
    assert {row["model"] for row in board["leaderboard"]} == {"base", "parrot"}
    assert board["win_rates"]["base"]["parrot"] == 0.5 and board["pairs"][0]["battles"] == 1


# -- the page ---------------------------------------------------------------------------------

@pytest.mark.browser
def test_a_researcher_votes_in_a_blind_battle_and_sees_the_reveal(served, page):
    expect = pytest.importorskip("playwright.sync_api").expect
    log_in(page, served.url, "rita", "researcher")
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-typed textarea, #arena-typed input").first.fill("Tell me <b>something</b>.")
    page.get_by_role("button", name="New battle").click()

    a, b = page.locator("#arena-a"), page.locator("#arena-b")
    expect(a).to_contain_text("Answer A", timeout=60_000)
    expect(b).to_contain_text("Answer B")
    expect(page.locator("#arena-prompt")).to_contain_text("Tell me <b>something</b>.")  # typed HTML as text
    parrot_side = "a" if "<svg onload=pwned()>" in a.inner_text() else "b"
    hostile = a if parrot_side == "a" else b
    expect(hostile).to_contain_text("<svg onload=pwned()> and bold too")  # as typed; Markdown around it works
    expect(hostile.locator("strong")).to_have_text("bold")
    assert page.locator("[onload]").count() == 0
    expect(a.locator("h4")).to_have_text("Answer A")  # nothing names the versions before the vote
    expect(b.locator("h4")).to_have_text("Answer B")
    expect(page.locator("#arena-reveal")).to_have_text("Two versions of the least-played pair answered, in a random "
                                                       "order. Which answer is better?")

    page.get_by_role("button", name="A is better").click()
    reveal = page.locator("#arena-reveal")
    first, second = ("parrot", "base") if parrot_side == "a" else ("base", "parrot")
    expect(reveal).to_contain_text(f"A was {first} and B was {second}. Your vote: A is better; stored as battle #")
    expect(page.get_by_role("button", name="A is better")).to_be_disabled()
    assert page.locator("[onload]").count() == 0

    newest = served.rows("SELECT model_a, model_b, vote, voter, prompt_text, completion_a, completion_b"
                         " FROM arena_battles WHERE voter = 'rita' ORDER BY id DESC LIMIT 1")[0]
    assert newest[:5] == (first, second, "a", "rita", "Tell me <b>something</b>.")
    assert (newest[5] if parrot_side == "a" else newest[6]) == HOSTILE
