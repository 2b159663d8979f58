"""The test users rita (researcher), ana, ben and cat (annotators) are defined once, in
tests/helpers.py; a test file that makes its own copies can drift from them (another role,
another name)."""

from __future__ import annotations

import ast
from pathlib import Path

import helpers

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_file_defines_its_own_shared_user():
    shared = {(user.name, user.role) for user in (helpers.ANA, helpers.BEN, helpers.CAT, helpers.RESEARCHER)}
    copies = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == TESTS / "helpers.py":
            continue
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # constants and calls in a test alike
            if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "User"
                    and [getattr(arg, "value", None) for arg in call.args] in map(list, shared)):
                copies.append(f"{path.relative_to(TESTS)}:{call.lineno}")
    assert copies == []
