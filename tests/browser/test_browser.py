"""The annotation page in a real browser: `rlhf serve` in a subprocess and Debian's
Chromium driven headless by Playwright. Users log in through Gradio's login form; what
the page submits is checked in the store after the server stops. A failing test leaves
a screenshot (its path is printed; under $TEST_ARTIFACTS when set)."""

from __future__ import annotations


import pytest

from rlhf.auth import create_user
from rlhf.collect.annotation import Annotation
from rlhf.preference.ranking import RankingError, parse_ranking
from storage import comparisons, prompts
from storage.comparisons import NewCompletion
from helpers import password, log_in

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
HOSTILE = f"{SCRIPT} then {IMG} and **bold**"
USERS = {"ana": "annotator", "bo": "annotator", "cy": "annotator", "rita": "researcher"}

expect.set_options(timeout=20_000)


def fill(wb) -> None:
    """Comparison 1 is hostile HTML (prompt and completion A); 2-4 are plain. With an
    overlap above the number of users, every user is handed 1, then 2, then 3, whatever
    the other tests did."""
    for name, role in USERS.items():
        create_user(wb.store, name, role, password(name))
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, "browser", [[{"role": "user", "content": f"Prompt {i}: {HOSTILE if i == 1 else 'hi'}"}]
                                             for i in range(1, 5)], source="test")
        rows = cur.execute("SELECT id FROM prompts WHERE prompt_set = 'browser' ORDER BY id").fetchall()
        for n, (prompt_id,) in enumerate(rows, start=1):
            texts = [HOSTILE if n == 1 and letter == "A" else f"Completion {letter} of comparison {n}"
                     for letter in "ABCD"]
            assert comparisons.add(cur, prompt_id, [NewCompletion(text, "base") for text in texts]) == n


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill, queue={"overlap": 10, "prompt_sets": ["browser"]})


def grammar_sentence(text: str, k: int = 4) -> str:
    with pytest.raises(RankingError) as refused:
        parse_ranking(text, k)
    return str(refused.value)


def checked_ranks(page, k: int = 4) -> list[str | None]:
    return [page.locator(f"#rank-{i} input:checked").get_attribute("value")
            if page.locator(f"#rank-{i} input:checked").count() else None for i in range(k)]


def assert_nothing_ran(page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0


def test_model_html_is_shown_as_text_and_never_runs(served, page):
    log_in(page, served.url, "ana", USERS["ana"])
    expect(page.locator("#prompt")).to_contain_text("Prompt 1:")
    expect(page.locator("#progress")).to_contain_text("Done today")
    expect(page.locator("#progress")).not_to_contain_text("#")  # no comparison id on the page
    completion = page.locator("#completion-0")
    expect(completion).to_contain_text(SCRIPT)
    expect(completion).to_contain_text(IMG)
    expect(completion.locator("strong")).to_have_text("bold")  # Markdown still works around it
    expect(page.locator("#prompt")).to_contain_text(f"Prompt 1: {SCRIPT} then {IMG}")
    expect(page.locator("#completion-1")).to_contain_text("Completion B of comparison 1")
    assert_nothing_ran(page)
    # the researchers' Comparisons tab shows the same text the same way
    page.goto(f"{served.url}/logout")
    log_in(page, served.url, "rita", USERS["rita"])
    page.get_by_role("tab", name="Comparisons").click()
    field = page.get_by_label("Comparison id")
    field.fill("1")
    field.press("Enter")
    expect(page.get_by_text(f"{SCRIPT} then {IMG}").filter(visible=True)).to_have_count(2)  # prompt and A
    assert_nothing_ran(page)


def test_researchers_see_the_queue_and_data_tabs_and_annotators_do_not(served, page):
    log_in(page, served.url, "ana", USERS["ana"])
    expect(page.get_by_role("tab", name="Annotate")).to_be_visible()
    for hidden in ("Queue", "Data", "Comparisons"):
        expect(page.get_by_role("tab", name=hidden)).to_have_count(0)
    page.goto(f"{served.url}/logout")
    log_in(page, served.url, "rita", USERS["rita"])
    for shown in ("Annotate", "Queue", "Data", "Comparisons"):
        expect(page.get_by_role("tab", name=shown)).to_be_visible()
    page.get_by_role("tab", name="Queue").click()
    expect(page.get_by_text("Pre-generation:")).to_be_visible()  # the handler let a researcher in
    expect(page.get_by_label("Annotators per comparison (overlap)")).to_have_value("10")


def test_the_queue_tab_stores_the_thompson_candidates_and_refuses_a_bad_number(served, page):
    """M (`candidates`) is set on the Queue tab, stored, and checked by the service: with the
    thompson selection and K=4, M=3 is refused in its sentence and nothing changes. The
    selection is left as it was (random) for the other tests."""
    log_in(page, served.url, "rita", USERS["rita"])
    page.get_by_role("tab", name="Queue").click()
    field, saved = page.locator("#queue-candidates input"), page.locator("#queue-saved")
    save = page.get_by_role("button", name="Save queue settings")
    expect(field).to_have_value("8")  # the default, read from the store
    field.fill("6")
    save.click()
    expect(saved).to_contain_text("Saved:")
    with served.stopped() as wb:
        assert (Annotation(wb).config.candidates, Annotation(wb).config.selection) == (6, "random")
    log_in(page, served.url, "rita", USERS["rita"])
    page.get_by_role("tab", name="Queue").click()
    expect(field).to_have_value("6")  # read back from the store
    selection = page.locator("#queue-selection")
    selection.get_by_label("Shown completions picked by Thompson sampling").check()
    field.fill("3")
    save.click()
    expect(page.get_by_text("candidates must be more than 4, not 3").first).to_be_visible()
    field.fill("5")
    save.click()
    expect(saved).to_contain_text("Thompson selection: K=4 shown of M=5 candidates per prompt.")
    selection.get_by_label("As they come").check()
    save.click()
    expect(saved).not_to_contain_text("Thompson")
    with served.stopped() as wb:
        config = Annotation(wb).config
        assert (config.candidates, config.selection, config.k) == (5, "random", 4)


def test_typing_and_selectors_rank_and_submit(served, page):
    log_in(page, served.url, "bo", USERS["bo"])
    expect(page.locator("#prompt")).to_contain_text("Prompt 1:")
    field, status, submit = page.locator("#ranking input"), page.locator("#ranking-status"), page.locator("#submit")
    expect(submit).to_be_disabled()

    field.press_sequentially("c>d=b>a")  # lowercase, no spaces: read, and shown canonical
    expect(status).to_contain_text("C > B = D > A")
    expect(submit).to_be_enabled()
    assert checked_ranks(page) == ["3", "2", "1", "2"]  # the selectors follow the text

    for wrong in ("c>b=d>", "c>b=d>e"):
        field.fill("")
        field.press_sequentially(wrong)
        expect(status).to_contain_text(grammar_sentence(wrong))
        expect(submit).to_be_disabled()
    field.press("Backspace")  # 'c>b=d>' again: Backspace alone must update the verdict
    expect(status).to_contain_text(grammar_sentence("c>b=d>"))
    field.fill("b>a>c>d")  # a paste, no keystrokes
    expect(status).to_contain_text("B > A > C > D")
    expect(submit).to_be_enabled()

    field.fill("")
    expect(submit).to_be_disabled()
    for i, rank in enumerate([4, 1, 2, 2]):  # selectors: ties by equal rank
        page.locator(f"#rank-{i}").get_by_label(str(rank), exact=True).check()
    expect(field).to_have_value("B > C = D > A")
    expect(status).to_contain_text("B > C = D > A")
    expect(submit).to_be_enabled()
    assert checked_ranks(page) == ["4", "1", "2", "2"]  # left as picked, not renumbered

    submit.click()
    expect(page.locator("#progress")).to_contain_text("Saved B > C = D > A")
    expect(page.locator("#prompt")).to_contain_text("Prompt 2:")
    expect(page.locator("#completion-0")).to_contain_text("Completion A of comparison 2")
    expect(field).to_have_value("")
    expect(submit).to_be_disabled()
    assert checked_ranks(page) == [None] * 4
    assert_nothing_ran(page)

    with served.stopped() as wb:
        cur = wb.store.cursor()
        rows = cur.execute("SELECT id, comparison_id, ranking, source, seconds_spent FROM rankings"
                           " WHERE annotator = 'bo'").fetchall()
        assert len(rows) == 1
        ranking_id, comparison_id, ranking, source, seconds = rows[0]
        assert (comparison_id, ranking, source) == (1, "B > C = D > A", "human")
        assert 0 < seconds < 600  # the server's clock, from the hand-out
        ranks = dict(cur.execute("SELECT m.letter, rr.rank FROM ranking_ranks rr JOIN completions m"
                                 " ON m.id = rr.completion_id WHERE rr.ranking_id = ?", [ranking_id]).fetchall())
        assert ranks == {"B": 1, "C": 2, "D": 2, "A": 3}


def test_keyboard_shortcuts_rank_submit_and_skip(served, page):
    log_in(page, served.url, "cy", USERS["cy"])
    expect(page.locator("#prompt")).to_contain_text("Prompt 1:")
    field, status, submit = page.locator("#ranking input"), page.locator("#ranking-status"), page.locator("#submit")
    page.locator("#prompt").click()  # focus out of the ranking field
    for key, after in [("3", "C"), ("2", "C > B"), ("1", "C > B > A"), ("Backspace", "C > B"), ("4", "C > B > D"),
                       ("=", "C > B = D"), ("1", "C > B = D > A")]:
        page.keyboard.press(key)
        expect(field).to_have_value(after)
    expect(status).to_contain_text("C > B = D > A")
    expect(submit).to_be_enabled()
    assert checked_ranks(page) == ["3", "2", "1", "2"]
    page.keyboard.press("Enter")
    expect(page.locator("#progress")).to_contain_text("Saved C > B = D > A")
    expect(page.locator("#prompt")).to_contain_text("Prompt 2:")

    page.locator("#prompt").click()
    page.keyboard.press("s")
    expect(page.locator("#progress")).to_contain_text("Skipped.")
    expect(page.locator("#prompt")).to_contain_text("Prompt 3:")

    # inside a text field keys are text: 's' is typed, nothing is skipped
    field.click()
    page.keyboard.press("s")
    expect(field).to_have_value("s")
    page.keyboard.press("2")
    expect(field).to_have_value("s2")
    expect(submit).to_be_disabled()
    expect(page.locator("#prompt")).to_contain_text("Prompt 3:")

    with served.stopped() as wb:
        cur = wb.store.cursor()
        assert cur.execute("SELECT comparison_id, ranking FROM rankings WHERE annotator = 'cy'").fetchall() == \
            [(1, "C > B = D > A")]
        assert cur.execute("SELECT comparison_id, reason FROM skips WHERE annotator = 'cy'").fetchall() == \
            [(2, "Other")]
