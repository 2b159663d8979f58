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


def imported_modules(path: Path) -> set[str]:
    """The workbench's own modules a file imports (`from a.b import c` names a.b.c when c is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if module_file(name) is not None}
    return found


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if name.split(".")[0] in BELOW and candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rlhf_package(module: str) -> str:
    """The sub-package of rlhf a module is in; the modules at rlhf's top level count as 'rlhf'."""
    parts = module.split(".")
    return "rlhf." + parts[1] if len(parts) > 2 else "rlhf"


def test_no_two_rlhf_packages_import_each_other():
    """rlhf's packages form layers too (preference and the top level under modeling, modeling under
    train, ...): a package that imports another is never imported by it."""
    edges = {(rlhf_package(module_name(path)), rlhf_package(imported))
             for path in (ROOT / "rlhf").rglob("*.py") for imported in imported_modules(path)
             if imported.startswith("rlhf.")}
    edges = {(a, b) for a, b in edges if a != b}
    assert sorted((a, b) for a, b in edges if (b, a) in edges) == []


def test_no_import_circles_between_modules():
    graph = {module_name(path): {module for module in imported_modules(path) if module != module_name(path)}
             for layer in BELOW for path in (ROOT / layer).rglob("*.py")}
    circles = []
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                circles.append(trail[trail.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
