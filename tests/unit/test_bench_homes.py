"""Every throw-away folder a benchmark makes (`rlhf/bench/`) is new for its run and named for
the benchmark: `tempfile.mkdtemp` or `TemporaryDirectory` with a prefix `rlhf-bench-NAME-`,
so that two runs, or two benchmarks, never share a folder and a leftover says whose it is.
Read from the source, so a new benchmark is checked as soon as it exists."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from conftest import placeholder_model_dir
from rlhf.bench.serving import fresh_home

BENCH = Path(__file__).resolve().parents[2] / "rlhf" / "bench"
MAKERS = {"mkdtemp", "TemporaryDirectory"}


def prefix_of(call: ast.Call) -> str | None:
    """The prefix as written, an f-string's formatted parts as {}; None without a prefix."""
    value = next((keyword.value for keyword in call.keywords if keyword.arg == "prefix"), None)
    parts = value.values if isinstance(value, ast.JoinedStr) else [value]
    if value is None or not all(isinstance(part, (ast.Constant, ast.FormattedValue)) for part in parts):
        return None
    return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in parts)


def test_every_throw_away_folder_of_a_benchmark_is_named_for_it():
    unnamed = []
    for path in sorted(BENCH.glob("*.py")):
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(call.func, "attr", getattr(call.func, "id", None)) if isinstance(call, ast.Call) else None
            if name not in MAKERS or any(keyword.arg == "dir" for keyword in call.keywords):
                continue  # not a folder maker, or one inside a folder the benchmark already has
            prefix = prefix_of(call)
            if not (prefix or "").startswith("rlhf-bench-") or len(prefix) <= len("rlhf-bench-"):
                unnamed.append(f"{path.name}:{call.lineno} {prefix!r}")
    assert unnamed == []


def test_fresh_homes_are_new_for_each_run_and_named_for_their_benchmark(tmp_path):
    model = placeholder_model_dir(tmp_path / "model")
    roots = [fresh_home(model, "first"), fresh_home(model, "first"), fresh_home(model, "annotate")]
    try:
        assert len(set(roots)) == 3
        assert [root.name.rsplit("-", 1)[0] for root in roots] == ["rlhf-bench-first"] * 2 + ["rlhf-bench-annotate"]
        assert all((root / "models" / "base" / "config.json").is_file() for root in roots)
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
