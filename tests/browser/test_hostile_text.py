"""Hostile text in a real browser, and the security headers on every response.

The corpus of tests/data/hostile_texts.json goes into completions, prompts, a better
answer, the guidelines, a prompt-set name and an annotator's name before the server
starts; an annotator and a researcher then open every tab that shows them. Nothing may
open a dialog, leave 127.0.0.1, break the Content-Security-Policy, or make an element
beyond Markdown's formatting inside rendered text; each payload's text must be readable."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from app.headers import CONTENT_SECURITY_POLICY
from rlhf.collect.annotation import Annotation
from rlhf.auth import User, create_user
from rlhf.modeling.sampling import MAX_K
from storage import comparisons, feedback, prompts
from storage.comparisons import NewCompletion
from helpers import ANA, DATA, RESEARCHER, log_in, password

try:  # the header test needs no browser
    from playwright.sync_api import expect
    expect.set_options(timeout=20_000)
except ImportError:
    expect = None

CORPUS = json.loads((DATA / "hostile_texts.json").read_text())["texts"]
HOSTILE_SET = '<img src="https://example.org/set.png" onerror="window.__pwned=20">set'
HOSTILE_ANNOTATOR = "<b onclick=alert(1)>eve</b>"
GUIDELINES = [item for item in CORPUS if item["name"] in (
    "fake sign-in form after a broken fence", "markdown image to another origin", "javascript link")]
USERS = (ANA, RESEARCHER)
FORBIDDEN = "form, input, button, textarea, select, iframe, frame, object, embed, style, script, svg, math, img, " \
            "video, audio, link, meta, base"
COMPARISONS = [CORPUS[start:start + MAX_K] for start in range(0, len(CORPUS), MAX_K)]


def fill(wb) -> None:
    """One comparison per eight texts, each prompt a hostile text too, all in the hostile
    set; a better answer and a comment by a hostile annotator name; hostile guidelines."""
    for user in USERS:
        create_user(wb.store, user.name, user.role, password(user.name))
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, HOSTILE_SET, [[{"role": "system", "content": CORPUS[-i]["text"]},
                                                {"role": "user", "content": CORPUS[i]["text"]}]
                                               for i in range(len(COMPARISONS))], source="test")
        rows = cur.execute("SELECT id FROM prompts WHERE prompt_set = ? ORDER BY id", [HOSTILE_SET]).fetchall()
        for (prompt_id,), texts in zip(rows, COMPARISONS):
            comparisons.add(cur, prompt_id, [NewCompletion(item["text"], "base") for item in texts])
        feedback.add_ranking(cur, 1, HOSTILE_ANNOTATOR, "A > B > C > D > E > F > G > H",
                             {letter: rank for rank, letter in enumerate("ABCDEFGH", start=1)},
                             better_answer=CORPUS[0]["text"], comment=CORPUS[1]["text"])
    Annotation(wb).save_guidelines(RESEARCHER, "\n\n".join(item["text"] for item in GUIDELINES))


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill, queue={"overlap": 10, "prompt_sets": [HOSTILE_SET]})


# -- headers: every response ---------------------------------------------------------------


def response_headers(url: str, data: bytes | None = None):
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:  # refusals must carry the headers as well
        return error.code, error.headers, error.read().decode(errors="replace")


def assert_secure(headers, what: str) -> None:
    policy = headers.get("Content-Security-Policy") or ""
    for directive in ("default-src 'self'", "img-src 'self' data:", "form-action 'self'", "frame-ancestors 'none'",
                      "object-src 'none'", "connect-src 'self'", "base-uri 'self'"):
        assert directive in policy.split("; "), (what, directive, policy)
    assert policy == CONTENT_SECURITY_POLICY, what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "same-origin", what


def test_every_response_carries_the_security_headers(served):
    url = served.url
    status, headers, page = response_headers(f"{url}/")  # the login page: nobody is signed in
    assert status == 200
    assert_secure(headers, "/")
    asset = re.search(r'src="\./(assets/index-[^"]+\.js)"', page)
    assert asset, "the page names its script"
    seen = {"/": status}
    for path in (f"/{asset.group(1)}", "/config", "/gradio_api/info", "/favicon.ico", "/no-such-page"):
        seen[path], headers, _ = response_headers(f"{url}{path}")
        assert_secure(headers, path)
    seen["POST /login"], headers, body = response_headers(f"{url}/login", b"username=nobody&password=wrong")
    assert_secure(headers, "POST /login")
    assert seen[f"/{asset.group(1)}"] == 200 and seen["/no-such-page"] == 404 and seen["POST /login"] >= 400, seen


# -- the page -------------------------------------------------------------------------------

CSP_WATCH = """window.__violations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"""


class Watch:
    """What the page did that it must not: dialogs, requests to other hosts, CSP violations."""

    def __init__(self, page):
        self.page, self.dialogs, self.outside, self.errors = page, [], [], []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("request", self._request)
        page.add_init_script(CSP_WATCH)

    def _request(self, request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob", "about") and parts.hostname != "127.0.0.1":
            self.outside.append(request.url)

    def check(self, where: str) -> None:
        assert self.dialogs == [], (where, self.dialogs)
        assert self.outside == [], (where, self.outside)
        assert self.page.evaluate("typeof window.__pwned") == "undefined", where
        outward = self.page.locator("[src*='example.org'], [action*='example.org'], [formaction*='example.org'], "
                                    "[data*='example.org'], [srcdoc]")
        assert outward.count() == 0, where  # anywhere in the page, tables and lists included
        assert self.page.evaluate("window.__violations") == [], where
        assert [error for error in self.errors if "Content Security Policy" in error] == [], where
        inside = self.page.locator(f".rendered-text .prose :is({FORBIDDEN})")
        assert self.page.locator(".rendered-text .prose").count() > 0, where  # the check below looks there
        assert inside.count() == 0, (where, [inside.nth(i).evaluate("e => e.outerHTML") for i in
                                             range(min(inside.count(), 3))])


TEXTS = """() => Object.fromEntries([...document.querySelectorAll('.block.rendered-text[id]')]
  .map((block) => [block.id, block.innerText.split(/\\s+/).join(' ')]))"""


def assert_shows(shown: dict[str, str], where: str, items: list[dict], place: str) -> None:
    """Every visible string of `items` is in the rendered text component `where`."""
    for item in items:
        for visible in item["visible"]:
            assert visible in shown[where], (place, item["name"], visible, shown[where][:300])


def log_in_watched(page, url: str, user: User, watch: Watch) -> None:
    try:
        log_in(page, url, user.name, user.role)
    except AssertionError as error:
        raise AssertionError(f"the page did not load; its console said {watch.errors}") from error


@pytest.mark.browser
def test_hostile_text_stays_text_for_an_annotator_and_a_researcher(served, page):
    watch = Watch(page)
    log_in_watched(page, served.url, ANA, watch)
    watch.check("login")
    page.locator("#guidelines").get_by_text("Guidelines and shortcuts").click()
    expect(page.locator("#guidelines-text")).to_contain_text("Sign in again")
    assert_shows(page.evaluate(TEXTS), "guidelines-text", GUIDELINES, "guidelines")
    for number, texts in enumerate(COMPARISONS, start=1):
        expect(page.locator("#progress")).to_contain_text(f"waiting for you {len(COMPARISONS) - number + 1}")
        expect(page.locator(f"#completion-{len(texts) - 1}")).to_contain_text(texts[-1]["visible"][0])
        shown = page.evaluate(TEXTS)
        assert_shows(shown, "prompt", [CORPUS[number - 1]], f"prompt {number}")
        for i, item in enumerate(texts):
            assert_shows(shown, f"completion-{i}", [item], f"comparison {number}")
        watch.check(f"annotate #{number}")
        page.locator("#skip").click()
    expect(page.locator("#progress")).to_contain_text("No comparison is waiting")

    page.goto(f"{served.url}/logout")
    log_in_watched(page, served.url, RESEARCHER, watch)
    page.get_by_role("tab", name="Comparisons").click()
    expect(page.get_by_text(HOSTILE_SET).first).to_be_attached()  # the table shows the set's name as text
    field = page.get_by_label("Comparison id")
    for number, texts in enumerate(COMPARISONS, start=1):
        field.fill(str(number))
        field.press("Enter")
        expect(page.locator("#comparison-shown")).to_contain_text(texts[-1]["visible"][0])
        assert_shows(page.evaluate(TEXTS), "comparison-shown", [CORPUS[number - 1], *texts], f"comparison #{number}")
        watch.check(f"comparisons #{number}")
    opened = {  # each tab, and what shows that its handler has answered
        "Queue": lambda: page.wait_for_function(
            "[...document.querySelectorAll('textarea')].some(t => t.value.includes('Sign in again'))"),
        "Data": lambda: expect(page.get_by_text(HOSTILE_ANNOTATOR).first).to_be_attached(timeout=60_000),  # slowest
        "Train": lambda: expect(page.locator("#train-job-line")).to_contain_text("No jobs yet"),
        "Compare": lambda: expect(page.locator("#side-a input")).to_have_value("base"),
    }
    for tab, answered in opened.items():
        page.get_by_role("tab", name=tab).click()
        answered()
        watch.check(tab)
