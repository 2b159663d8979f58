"""Exports: the rows each export format holds (`export_table`), and the files made for a
download in the page, kept for an hour and then deleted.

The Data and Compare tabs write each export into a fresh folder under the home's
`exports/` (Gradio then serves a copy from its cache, which the server also clears after
the same time). Nothing else keeps them: a server that ran for a month would otherwise
keep every export anyone ever made, each with every ranking in the store. `sweep`
deletes the folders older than `LIMITS.export_ttl_s`; `Sweeper` runs it in the
background, and each new export runs it first.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from pathlib import Path

import pandas as pd

from rlhf.errors import WorkbenchError
from rlhf.home import Home
from rlhf.limits import LIMITS
from rlhf.preference import pairs

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("preference", "unpaired", "rankings")


def export_table(rankings: pd.DataFrame, format: str, selection: str = "all",
                 labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows one export format holds, from `Workbench.rankings()`: TRL preference pairs
    (prompt, chosen, rejected, margin), TRL unpaired rows (prompt, completion, label; an
    annotator's good/bad mark in `labels`, `Workbench.labels()`, wins over the label from
    the rank, as in a KTO job's rows) or the raw rankings as they are."""
    if format not in EXPORT_FORMATS:
        raise WorkbenchError(f"Unknown export format '{format}': choose {', '.join(EXPORT_FORMATS)}.")
    if format == "preference":
        return pairs.preference_pairs(rankings, selection)[["prompt", "chosen", "rejected", "margin"]]
    if format == "unpaired":
        return pairs.unpaired_examples(rankings, labels)[["prompt", "completion", "label"]]
    return rankings


def sweep(home: Home, max_age_s: float = LIMITS.export_ttl_s, now: float | None = None) -> int:
    """Delete the export folders last changed more than `max_age_s` ago; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    for folder in home.exports_dir.glob("*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder)
                removed += 1
        except OSError as error:  # gone already, or held open: the next sweep tries again
            log.warning("Could not delete the old export %s: %s", folder, error)
    return removed


def new_path(home: Home, name: str) -> Path:
    """Where to write a new export called `name`: a fresh folder of its own (so two
    downloads never overwrite each other), after clearing out the stale ones."""
    sweep(home)
    folder = home.exports_dir / secrets.token_hex(8)
    folder.mkdir(parents=True)
    return folder / name


class Sweeper(threading.Thread):
    """`sweep` every `every_s` seconds until `stop()`."""

    def __init__(self, home: Home, every_s: float = 300.0, max_age_s: float = LIMITS.export_ttl_s):
        super().__init__(name="export-sweeper", daemon=True)
        self.home, self.every_s, self.max_age_s = home, every_s, max_age_s
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.every_s):
            sweep(self.home, self.max_age_s)

    def stop(self) -> None:
        self._stopping.set()
