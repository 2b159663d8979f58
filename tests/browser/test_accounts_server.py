"""Accounts against a real `rlhf serve`: throttled sign-in that never stalls other users,
disabled accounts and admin actions through the Users tab's endpoints, the first admin's
forced password change, and idle sessions ending. Plain HTTP (httpx) for the login route,
gradio_client for the endpoints, as scripts use them."""

from __future__ import annotations

import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rlhf import auth
from storage import comparisons, prompts
from storage.comparisons import NewCompletion
from helpers import password, client

WRONG = "Wrong user name or password."
THROTTLED = re.compile(r"Too many failed sign-ins for '[^']+' or from this address; try again in (\d+) seconds?\.")
FIRST_ADMIN_PASSWORD = "shown-once-pw"


def fill(wb) -> None:
    for name in ("ana", "ben", "cy", "dan", "eve"):
        auth.create_user(wb.store, name, "annotator", password(name))
    auth.create_user(wb.store, "rita", "researcher", password("rita"))
    auth.create_user(wb.store, "root", "admin", password("root"))
    # what `rlhf init` leaves without a terminal: a shown-once password to be replaced
    auth.set_password(wb.store, "admin", FIRST_ADMIN_PASSWORD, must_change_password=True)
    auth.create_user(wb.store, "boss", "admin", FIRST_ADMIN_PASSWORD, must_change_password=True)
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, "accounts", [[{"role": "user", "content": f"prompt {i}"}] for i in range(3)],
                            source="test")
        for (prompt_id,) in cur.execute("SELECT id FROM prompts WHERE prompt_set = 'accounts'").fetchall():
            comparisons.add(cur, prompt_id, [NewCompletion(f"#{prompt_id} {letter}", "base") for letter in "ABCD"])


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill)


def post_login(url: str, name: str, secret: str, http: httpx.Client | None = None) -> httpx.Response:
    return (http or httpx).post(f"{url}/login", data={"username": name, "password": secret}, timeout=60)


def refusal(call) -> str:
    with pytest.raises(Exception) as refused:
        call()
    return str(refused.value)


def test_at_the_page_an_admin_who_must_change_the_password_does_so_and_then_manages_users(served, page):
    from playwright.sync_api import expect

    slow = 30_000  # ms: a page's first load is slow on a busy machine
    page.goto(served.url)
    expect(page.get_by_text("10 in a row lock the account for 15 minutes")).to_be_visible(timeout=slow)  # the rules
    page.get_by_label("username").fill("boss")
    page.get_by_label("password").fill(FIRST_ADMIN_PASSWORD)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#user-line")).to_contain_text("boss must choose a new password first", timeout=slow)
    expect(page.get_by_role("tab", name="Users")).to_have_count(0)
    page.get_by_role("tab", name="Account").click()
    page.get_by_label("Current password").fill(FIRST_ADMIN_PASSWORD)
    page.get_by_label("New password", exact=True).fill("boss-own-pw-1")
    page.get_by_label("New password again").fill("boss-own-pw-1")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Your password is changed")).to_be_visible(timeout=slow)
    page.reload()
    expect(page.locator("#user-line")).to_contain_text("Signed in as boss (admin)", timeout=slow)
    page.get_by_role("tab", name="Users").click()
    expect(page.get_by_role("gridcell", name="rita", exact=True)).to_be_visible(timeout=slow)


def test_the_first_admin_must_choose_a_new_password_before_anything_else(served):
    admin = client(served, "admin", FIRST_ADMIN_PASSWORD)  # signing in itself is allowed
    for endpoint in ("/progress", "/next_comparison", "/list_users"):
        assert "admin must choose a new password first" in refusal(lambda: admin.predict(api_name=endpoint))
    assert "current password is wrong" in refusal(
        lambda: admin.predict("not-it", "a-brand-new-pw", "a-brand-new-pw", api_name="/change_password"))
    assert "differ" in refusal(
        lambda: admin.predict(FIRST_ADMIN_PASSWORD, "a-brand-new-pw", "another-new-pw", api_name="/change_password"))
    changed = admin.predict(FIRST_ADMIN_PASSWORD, "a-brand-new-pw", "a-brand-new-pw", api_name="/change_password")
    assert changed[0].startswith("Your password is changed")
    assert admin.predict(api_name="/progress")["done_total"] == 0
    assert post_login(served.url, "admin", FIRST_ADMIN_PASSWORD).json() == {"detail": WRONG}
    assert client(served, "admin", "a-brand-new-pw").predict(api_name="/progress")["done_total"] == 0


def test_only_admins_manage_users_and_a_disabled_users_session_ends(served):
    ana, rita, root = client(served, "ana"), client(served, "rita"), client(served, "root")
    assert ana.predict(api_name="/progress")["done_total"] == 0
    assert "Only admins may do this, and rita is a researcher." in refusal(
        lambda: rita.predict("ana", "disable", api_name="/set_account_state"))
    assert ana.predict(api_name="/progress")["done_total"] == 0  # the refusal changed nothing

    said, table = root.predict("ana", "disable", api_name="/set_account_state")
    assert said == "ana is disabled and signed out everywhere."
    refusal(lambda: ana.predict(api_name="/progress"))  # the open session is refused at its next request
    assert post_login(served.url, "ana", password("ana")).json() == {
        "detail": "The account 'ana' is disabled; ask an admin to enable it."}
    assert "last enabled admin" not in refusal(lambda: root.predict("nobody", "disable", api_name="/set_account_state"))

    root.predict("ana", "enable", api_name="/set_account_state")
    assert client(served, "ana").predict(api_name="/progress")["done_total"] == 0

    said, _ = root.predict("dan", "researcher", api_name="/set_role")
    assert said == "dan is now a researcher."
    said, _, _ = root.predict("eve", "eve-reset-pw-1", api_name="/set_password")
    assert said.startswith("eve has a new password")
    assert client(served, "eve", "eve-reset-pw-1").predict(api_name="/progress")["done_total"] == 0
    assert "Only admins may do this" in refusal(lambda: client(served, "dan").predict(api_name="/list_users"))


def test_a_login_flood_is_throttled_and_does_not_stall_a_signed_in_user(served):
    """20 threads, 120 wrong passwords, while another signed-in user keeps asking for work.
    Runs last in this module: it leaves the address waiting for a few seconds."""
    cy = client(served, "cy")

    def timed_next() -> float:
        started = time.perf_counter()
        cy.predict(api_name="/next_comparison")
        return time.perf_counter() - started

    quiet = [timed_next() for _ in range(10)]  # the same calls without a flood, for the printed comparison
    answers: list[str] = []
    lock = threading.Lock()
    flooding = threading.Event()
    flooding.set()

    def flood(thread: int) -> None:
        with httpx.Client() as http:
            for attempt in range(6):
                name = "ben" if attempt % 2 else f"ghost{thread}"
                detail = post_login(served.url, name, f"wrong-{thread}-{attempt}", http).json()["detail"]
                with lock:
                    answers.append(detail)

    latencies = []
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(flood, thread) for thread in range(20)]
        while not all(f.done() for f in futures) or len(latencies) < 10:
            latencies.append(timed_next())
        for future in futures:
            future.result()

    def summary(seconds: list[float]) -> str:
        p95 = statistics.quantiles(seconds, n=20)[-1]
        return f"n={len(seconds)}, median {statistics.median(seconds) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"

    checked, throttled = answers.count(WRONG), sum(bool(THROTTLED.fullmatch(a)) for a in answers)
    print(f"\nlogin flood: {len(answers)} tries, {checked} checked, {throttled} throttled; a signed-in user's "
          f"/next_comparison during it: {summary(latencies)}; without a flood: {summary(quiet)}")
    assert len(answers) == 120 and checked + throttled == 120  # every answer is one of the two sentences
    assert throttled > 0 and checked <= 40  # at most the first burst (20) and a few after

    # ben's name took wrong passwords too, but fewer than a lock: his own password still works
    # once the address's wait is over (the refusal says how long)
    for _ in range(6):
        answer = post_login(served.url, "ben", password("ben"))
        if answer.status_code == 200:
            break
        time.sleep(int(THROTTLED.fullmatch(answer.json()["detail"])[1]))
    assert answer.status_code == 200, answer.text
    assert client(served, "ben").predict(api_name="/progress")["done_total"] == 0


def test_an_idle_session_ends(serve_workbench):
    """A session unused for --idle-hours is ended server side (how long use keeps one open
    is tested on SessionTokens with a fake clock: on a loaded machine a sleep is not exact)."""
    idle_s = 5.0
    served = serve_workbench(fill, serve_args=("--idle-hours", str(idle_s / 3600)))
    ana = client(served, "ana")
    assert ana.predict(api_name="/progress")["done_total"] == 0
    time.sleep(idle_s + 2)
    refusal(lambda: ana.predict(api_name="/progress"))
    assert client(served, "ana").predict(api_name="/progress")["done_total"] == 0  # signing in again works
