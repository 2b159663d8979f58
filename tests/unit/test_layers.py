"""The layers: app (pages, command line) -> rlhf (logic) -> storage (SQL). Imports flow only
that way; read from the source, so a new file is checked as soon as it exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BELOW = {"app": {"storage"}, "rlhf": {"app"}, "storage": {"app", "rlhf"}}  # layer -> packages it must not import


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a file imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", sorted(BELOW))
def test_imports_flow_app_to_rlhf_to_storage(layer):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & BELOW[layer])
             for path in sorted((ROOT / layer).rglob("*.py"))}
    assert {path: packages for path, packages in wrong.items() if packages} == {}
