"""Stored automatic evaluations as the page and the command line show them: one flat table,
one row per version and side, each version's newest figures in a line, a tally of wins.

What the figures are is :mod:`rlhf.modeling.measure`; how an evaluation is planned, run and
stored, :mod:`rlhf.compare.evaluate`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rlhf.compare.evaluate import COLUMNS

if TYPE_CHECKING:
    from rlhf.collect.workbench import Workbench


def flatten(frame) -> "Any":
    """Stored evaluations (storage.evaluations.list_evaluations) as one flat table: the
    columns plus every figure; newest first."""
    import pandas as pd

    rows = []
    for row in frame.to_dict("records"):
        metrics = row.get("metrics") or {}
        rows.append({key: row[key] for key in COLUMNS + ("created_by", "created_at")} | metrics)
    return pd.DataFrame(rows)


def per_version(frame) -> "Any":
    """Each side of every stored evaluation as one row per version: ``version``,
    ``opponent``, ``evaluation`` (its id), ``reward_version``, ``reference``, ``win_rate``
    (of this version over the opponent), ``mean_reward``, ``mean_length``, ``kl``; newest
    first. What the per-version plots and the models table show."""
    import pandas as pd

    rows = []
    for row in frame.to_dict("records"):
        metrics = row.get("metrics") or {}
        win_rate = metrics.get("win_rate")
        for side, other in (("a", "b"), ("b", "a")):
            if side == "b" and row["version_a"] == row["version_b"]:
                continue  # a version against itself: one row
            rows.append({
                "version": row[f"version_{side}"], "opponent": row[f"version_{other}"], "evaluation": row["id"],
                "reward_version": row["reward_version"], "reference": metrics.get("reference"),
                "prompt_set": row["prompt_set"], "n": row["n"],
                "win_rate": None if win_rate is None else (win_rate if side == "a" else 1.0 - win_rate),
                "mean_reward": metrics.get(f"mean_reward_{side}"), "mean_length": metrics.get(f"mean_length_{side}"),
                "kl": metrics.get(f"kl_{side}"),
            })
    columns = ["version", "opponent", "evaluation", "reward_version", "reference", "prompt_set", "n", "win_rate",
               "mean_reward", "mean_length", "kl"]
    return pd.DataFrame(rows, columns=columns)


def latest_per_version(frame) -> "Any":
    """The newest evaluation figures of each version (one row per version): for the
    models table. `frame` as for :func:`per_version`."""
    versions = per_version(frame)
    return versions.drop_duplicates("version", keep="first").reset_index(drop=True)


def version_summaries(wb: "Workbench") -> dict[str, str]:
    """Each evaluated version's newest figures as a :func:`summary_line`: what the models
    tables show."""
    from storage import evaluations

    latest = latest_per_version(evaluations.list_evaluations(wb.store.cursor()))
    return {row["version"]: summary_line(row) for row in latest.to_dict("records")}


def tally(result: dict) -> str:
    """'1 win, 0 ties, 2 losses' from an evaluation's counts."""
    words = (("wins", "win", "wins"), ("ties", "tie", "ties"), ("losses", "loss", "losses"))
    return ", ".join(f"{result[key]} {one if result[key] == 1 else many}" for key, one, many in words)


def summary_line(row: dict) -> str:
    """One version's newest figures in a few words, e.g. 'reward 0.31 · KL 2.1 · 54 tok · win 0.62 vs base (#3)'."""
    parts = []
    for key, label, fmt in (("mean_reward", "reward", "{:.3g}"), ("kl", "KL", "{:.3g}"),
                            ("mean_length", "", "{:.0f} tok")):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{label} {fmt.format(value)}".strip())
    if row.get("win_rate") is not None and not (isinstance(row["win_rate"], float) and math.isnan(row["win_rate"])):
        parts.append(f"win {row['win_rate']:.2f} vs {row['opponent']}")
    return " · ".join(parts) + (f" (eval #{row['evaluation']})" if parts else "")
