"""`python -m rlhf.bench scale`: what a home of many rankings costs. A synthetic store
(`storage.synthetic`: N comparisons of K=4, four annotators each, so 4N rankings) is
written into a fresh home, then each step is timed once: reading the rankings (all, and the
newest that the 'thompson' selection fits its ensemble on), the Data tab's figures (what
its refresh computes), the three file exports, the Hugging Face export, a backup and its
restore. Nothing is sampled or trained: no model is needed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rlhf.collect import hf_dataset
from rlhf.collect.candidates import MAX_RANKINGS
from rlhf.collect.reports import Filters, Reports
from rlhf.collect.workbench import Workbench
from rlhf.home import Home
from storage import backup, synthetic
from storage.db import Store

STEPS = ("rankings", "newest_rankings", "data_tab", "preference", "unpaired", "rankings_export", "hf", "backup", "restore")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--comparisons", type=int, default=25_000,
                        help="synthetic comparisons of K=4, each ranked by 4 annotators (default 25,000: 100k rankings)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of: {', '.join(STEPS)}")
    parser.add_argument("--dir", default=None, help="work here (kept) instead of a temporary folder (removed)")


def run(args: argparse.Namespace) -> int:
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or args.comparisons < 1:
        print(f"Unknown step {', '.join(unknown)}: choose from {', '.join(STEPS)}." if unknown
              else f"--comparisons must be at least 1, not {args.comparisons}.")
        return 2
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rlhf-bench-scale-"))
    try:
        for label, seconds, detail in measure(root, args.comparisons, steps):
            print(f"{label:<28} {seconds:8.1f} s  {detail}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def measure(root: Path, comparisons: int, steps: list[str]):
    """Yield (step, seconds, what it made) for each step asked, in the order of STEPS."""
    home = Home(root / "home")
    home.prepare()
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with Store(home.db_path) as store:
        seconds, made = _timed(lambda: synthetic.fill(store, comparisons))
    yield "synthetic store", seconds, f"{made} rankings"
    with Workbench(home) as wb:
        timings: dict[str, Callable[[], str]] = {
            "rankings": lambda: f"{len(wb.rankings())} rows",
            "newest_rankings": lambda: f"{len(wb.rankings(newest=MAX_RANKINGS))} rows",
            "data_tab": lambda: _data_tab(Reports(wb)),
            "preference": lambda: f"{wb.export('preference', out / 'preference.parquet')[1]} pairs",
            "unpaired": lambda: f"{wb.export('unpaired', out / 'unpaired.parquet')[1]} rows",
            "rankings_export": lambda: f"{wb.export('rankings', out / 'rankings.parquet')[1]} rows",
            "hf": lambda: ", ".join(f"{subset} {rows}" for subset, rows in hf_dataset.export(wb, out / "hf").rows.items()),
            "backup": lambda: f"{sum(backup.write_backup(wb.store, out / 'backup').tables.values())} rows",
        }
        for step in STEPS:
            if step in steps and step in timings:
                seconds, detail = _timed(timings[step])
                yield step, seconds, detail
        if "restore" in steps and "backup" not in steps:
            backup.write_backup(wb.store, out / "backup")
    if "restore" in steps:
        seconds, restored = _timed(lambda: backup.restore_backup(out / "backup", out / "restored.duckdb"))
        yield "restore", seconds, f"{sum(restored.tables.values())} rows"


def _data_tab(reports: Reports) -> str:
    filters = Filters()
    reports.activity(filters)
    figures = reports.agreement(filters)
    reports.suggestion_agreement(filters)
    reports.by_round(filters)
    reports.choices()
    return f"{figures.get('items', '?')} comparisons in the agreement figures"


def _timed(step: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    made = step()
    return time.perf_counter() - started, made
