"""Every staff-only API endpoint, called by an annotator of a served workbench: each one
refuses in the one sentence of `rlhf.auth.require_role`, and the store is the same
afterwards, table by table, as before. One server for the module."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from rlhf.auth import create_user
from helpers import client, password

REFUSAL = "^Only researchers or admins may do this, and ana is an annotator.$"
# endpoint -> arguments that a researcher could send (the role is checked before any of them)
STAFF_ENDPOINTS = {
    "queue_settings": dict(overlap=3, gold_rate=0.5),
    "mark_gold": (1, "A > B"),
    "preview_job": ("sft",),
    "submit_job": ("sft",),
    "job_status": (1,),
    "cancel_job": (1,),
    "list_jobs": (),
    "list_models": (),
    "promote_model": ("base",),
    "compare_versions": ("base", "base", "Hello"),
    "arena_battle": ("base", "base", "Hello"),
    "arena_vote": ("some-battle", "a"),
    "arena_leaderboard": (),
    "arena_battles": (),
    "evaluate_versions": ("base", "base", "default", 1),
    "list_evaluations": (),
}


def fill(wb) -> None:
    create_user(wb.store, "ana", "annotator", password("ana"))


def snapshot(wb) -> dict[str, list[tuple]]:
    """Every table's rows, sorted (logging in writes none)."""
    cur = wb.store.cursor()
    tables = [name for (name,) in cur.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
    return {name: sorted(map(repr, cur.execute(f'SELECT * FROM "{name}"').fetchall()))
            for name in tables}


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill)


def test_the_endpoint_list_is_every_staff_check_in_the_api():
    """A new staff-only endpoint has to be added above (and so tested)."""
    import inspect

    import app.api

    assert inspect.getsource(app.api).count("ctx.user(request, *STAFF)") == len(STAFF_ENDPOINTS)


def test_an_annotator_is_refused_by_every_staff_endpoint_and_changes_nothing(served):
    with served.stopped() as wb:
        before = snapshot(wb)
    ana = client(served, "ana")
    for endpoint, arguments in STAFF_ENDPOINTS.items():
        with pytest.raises(AppError, match=REFUSAL):
            if isinstance(arguments, dict):
                ana.predict(**arguments, api_name=f"/{endpoint}")
            else:
                ana.predict(*arguments, api_name=f"/{endpoint}")
    with served.stopped() as wb:
        after = snapshot(wb)
    assert after == before
