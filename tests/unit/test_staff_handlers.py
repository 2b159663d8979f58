"""Every staff-only handler of the research tabs, called directly as an annotator: each
refuses with `rlhf.auth.require_role`'s sentence before it reads its other inputs, and no
stored row changes. The handlers are found by their role check, so a new one is covered."""

from __future__ import annotations

import importlib
import inspect
from types import SimpleNamespace

import gradio as gr
import pytest

from rlhf.auth import create_user
from rlhf.collect.workbench import Workbench

from conftest import make_home, placeholder_model_dir
from helpers import app_context, password

TABS = ("compare", "data", "queue", "train")
STAFF_CHECK = "ctx.user(request, *STAFF)"
REFUSAL = "Only researchers or admins may do this, and ana is an annotator."


def staff_handlers() -> list[tuple[str, object]]:
    """(module.name, function) for every module-level tab function that checks for staff."""
    found = []
    for tab in TABS:
        module = importlib.import_module(f"app.tabs.{tab}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ == module.__name__ and STAFF_CHECK in inspect.getsource(function):
                found.append((f"{tab}.{name}", function))
    return found


def snapshot(wb) -> dict[str, list[str]]:
    cur = wb.store.cursor()
    tables = [name for (name,) in cur.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
    return {name: sorted(map(repr, cur.execute(f'SELECT * FROM "{name}"').fetchall())) for name in tables}


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    root = tmp_path_factory.mktemp("staff-handlers")
    home = make_home(root / "home", placeholder_model_dir(root / "model"))
    with Workbench(home) as wb:
        create_user(wb.store, "ana", "annotator", password("ana"))
        yield wb


def test_the_handlers_found_are_every_staff_check_in_the_tabs():
    """Nested handlers (inside `build`) would escape the search: the counts must agree."""
    in_source = sum(inspect.getsource(importlib.import_module(f"app.tabs.{tab}")).count(STAFF_CHECK)
                    for tab in TABS)
    assert len(staff_handlers()) == in_source >= 20


def test_an_annotator_is_refused_by_every_staff_handler_and_changes_nothing(wb):
    ctx, request = app_context(wb), SimpleNamespace(username="ana")
    before = snapshot(wb)
    for name, handler in staff_handlers():
        # Every other input is None: the role check must come before anything reads them.
        arguments = {parameter: ctx if parameter == "ctx" else request if parameter == "request" else None
                     for parameter, spec in inspect.signature(handler).parameters.items()
                     if spec.kind is not inspect.Parameter.VAR_POSITIONAL}
        with pytest.raises(gr.Error) as refused:
            handler(**arguments)
        assert refused.value.message == REFUSAL, name
    assert snapshot(wb) == before
