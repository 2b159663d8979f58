"""The rankings as a Hugging Face `datasets` dataset on disk, with its dataset card.

`rlhf export --format hf DIR` writes one folder per subset, each one Parquet file per split,
and a `README.md` whose YAML header declares them (`configs:`), so that
`datasets.load_dataset(DIR, "preference")` finds them with no loading script:

    DIR/README.md                 the card: YAML metadata, then what the subsets hold
    DIR/preference/train.parquet  TRL preference pairs (prompt, chosen, rejected, margin)
    DIR/unpaired/train.parquet    TRL unpaired rows (prompt, completion, label), for KTO
    DIR/rankings/train.parquet    every ranking with its comparison and per-completion ranks

The rows are those of the other export formats (`exports.export_table`), so the pairs and
the unpaired rows feed TRL's `DPOTrainer`, `RewardTrainer` and `KTOTrainer` as they are.
Annotators are `annotator-1`, `annotator-2`, ... (in the order of their first ranking)
unless their names are asked for. Prompts, completions and comments are untrusted: they go
into the Parquet files only; the card holds counts, figures and the checked licence id, and
its YAML is written by a YAML emitter, never by pasting text.

Card format: https://huggingface.co/docs/hub/datasets-cards and, for `configs:`,
https://huggingface.co/docs/hub/datasets-manual-configuration. Nothing is uploaded.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rlhf.collect.exports import export_table
from rlhf.collect.workbench import Workbench, WorkbenchError
from rlhf.preference import agreement
from rlhf.preference.pairs import SELECTIONS
from rlhf.settings import setting

SUBSETS = ("preference", "unpaired", "rankings")
SPLIT = "train"
# Hub licence ids are lower-case SPDX-like tokens ("cc-by-4.0", "apache-2.0", "other"); a
# value the card would have to escape is no licence id.
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
# The Hub's size_categories bins, by the largest subset's rows.
_SIZE_BINS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"))
_NULL_TYPES = {"round": "int32", "seconds_spent": "float64", "none_acceptable": "bool"}
_WORD = re.compile(r"[a-z_]{1,32}")
_ABOUT = {
    "preference": "TRL preference pairs (`prompt`, `chosen`, `rejected` as chat messages; `margin` the rank"
                  " distance): DPO and reward models",
    "unpaired": "TRL unpaired rows (`prompt`, `completion`, `label`: top group true, bottom group false, an"
                " annotator's own good/bad mark first): KTO",
    "rankings": "every ranking as made: the prompt, the K completions (A first), the ranking (`C > B = D > A`),"
                " each completion's rank, the annotator, round and model versions",
}


@dataclass(frozen=True)
class HFExportSettings:
    """What `rlhf export --format hf` writes besides the rows."""

    license: str = setting("other", "the dataset's licence as a Hub licence id (cc-by-4.0, apache-2.0, ...; 'other'"
                                    " when none fits); the workbench cannot know it, so whoever publishes says it")
    selection: str = setting("all", "preference pairs: 'all' pairs of a ranking, or 'best_vs_worst' (best group"
                                    " against worst group)")
    annotator_names: bool = setting(False, "keep the annotators' user names in `rankings`; by default each is"
                                           " annotator-N")


@dataclass(frozen=True)
class HFExport:
    path: Path
    rows: dict[str, int]  # subset -> rows in its train split


def export(wb: Workbench, out: str | Path, settings: HFExportSettings = HFExportSettings()) -> HFExport:
    """Write the store's rankings as a dataset folder at `out` (new or empty); returns
    where and how many rows each subset got. A refusal leaves `out` as it was."""
    out = Path(out)
    _check(settings, out)
    rankings = wb.rankings()
    if rankings.empty:
        raise WorkbenchError("There are no rankings to export yet.")
    labels = wb.labels()
    tables = {name: export_table(rankings, name, settings.selection, labels) for name in SUBSETS}
    annotators = rankings["user"] if settings.annotator_names else _pseudonyms(rankings["user"])
    tables["rankings"] = tables["rankings"].drop(columns="user").assign(annotator=annotators)
    return _write(out, tables, collection_facts(rankings), settings)


def collection_facts(rankings: pd.DataFrame) -> dict[str, Any]:
    """How the rankings were collected, for the card: counts, rounds, sources, dates and
    the agreement between annotators (`agreement.annotator_agreement`; None where no
    comparison was ranked by two of them)."""
    measured = agreement.annotator_agreement(
        rankings[["comparison_id", "user"]].assign(rank_list=rankings["ranks"].map(list)))
    rounds = sorted(int(r) for r in rankings["round"].dropna().unique())
    return {
        "rankings": len(rankings),
        "comparisons": int(rankings["comparison_id"].nunique()),
        "annotators": int(rankings["user"].nunique()),
        "completions_per_comparison": sorted({len(c) for c in rankings["completions"]}),
        "rounds": len(rounds),
        "sources": {str(k): int(v) for k, v in rankings["source"].value_counts().sort_index().items()},
        "first_ranking": _day(rankings["created_at"].min()),
        "last_ranking": _day(rankings["created_at"].max()),
        "agreement": {
            "comparisons_with_overlap": int(measured["items"]),
            "pairwise_agreement": _figure(measured["pairwise_agreement"]),
            "kendall_tau_b": _figure(measured["kendall_tau_b"]),
            "krippendorff_alpha_ordinal": _figure(measured["krippendorff_alpha"]),
        },
    }


def _check(settings: HFExportSettings, out: Path) -> None:
    if not _LICENSE.fullmatch(settings.license):
        raise WorkbenchError(f"The licence must be a Hub licence id such as cc-by-4.0, apache-2.0 or other, "
                             f"not {settings.license[:80]!r}.")
    if settings.selection not in SELECTIONS:
        raise WorkbenchError(f"Unknown selection '{settings.selection}': choose {', '.join(SELECTIONS)}.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WorkbenchError(f"{out} already exists and is not an empty folder; choose a new one.")


def _pseudonyms(users: pd.Series) -> pd.Series:
    names = {user: f"annotator-{number}" for number, user in enumerate(dict.fromkeys(users), start=1)}
    return users.map(names)


def _write(out: Path, tables: dict[str, pd.DataFrame], facts: dict, settings: HFExportSettings) -> HFExport:
    from datasets import Dataset  # only this command pays for importing it
    from datasets.utils import logging as datasets_logging

    # Written beside `out` and renamed into place: a reader never sees half a dataset.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    bars_were_on = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()  # a bar per file for a few small files is noise
    try:
        infos = []
        for name, table in tables.items():
            dataset = _typed(Dataset.from_pandas(table.reset_index(drop=True), preserve_index=False))
            target = staging / name / f"{SPLIT}.parquet"
            target.parent.mkdir()
            dataset.to_parquet(str(target))
            infos.append({"config_name": name, "features": dataset.features._to_yaml_list(),
                          "splits": [{"name": SPLIT, "num_examples": len(dataset)}],
                          "download_size": target.stat().st_size})
        rows = {name: len(table) for name, table in tables.items()}
        (staging / "README.md").write_text(card(rows, infos, facts, settings), encoding="utf-8")
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars_were_on:
            datasets_logging.enable_progress_bar()
    return HFExport(out, rows)


def _typed(dataset):
    """Columns that held only nulls (no comment yet, no round) typed as what they hold
    once filled, so that two exports of one store have the same features."""
    from datasets import Value

    features = dataset.features.copy()
    nulls = [name for name, feature in features.items() if isinstance(feature, Value) and feature.dtype == "null"]
    if not nulls:
        return dataset
    for name in nulls:
        features[name] = Value(_NULL_TYPES.get(name, "string"))
    return dataset.cast(features)


def card(rows: dict[str, int], infos: list[dict], facts: dict, settings: HFExportSettings) -> str:
    """The dataset card: YAML metadata (licence, sizes, configs, features, how the data was
    collected) between `---` lines, then the same in prose. Only our own figures appear."""
    metadata = {
        "license": settings.license,
        "pretty_name": "RLHF Workbench preferences",
        "tags": ["rlhf", "preference", "dpo", "kto", "trl"],
        "size_categories": [_size_category(max(rows.values()))],
        "configs": [{"config_name": name, "default": name == SUBSETS[0],
                     "data_files": [{"split": SPLIT, "path": f"{name}/{SPLIT}.parquet"}]} for name in rows],
        "dataset_info": infos,
        "collection": {**facts, "annotator_names": "kept" if settings.annotator_names else "replaced by annotator-N",
                       "pair_selection": settings.selection},
    }
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=False, width=1000)
    subsets = "\n".join(f"| `{name}` | {rows[name]} | {_ABOUT[name]} |" for name in rows)
    measured = facts["agreement"]
    if measured["comparisons_with_overlap"]:
        agreed = (f"over the {measured['comparisons_with_overlap']} comparisons ranked by two or more annotators:"
                  f" pairwise agreement {_shown(measured['pairwise_agreement'])}, Kendall's tau-b"
                  f" {_shown(measured['kendall_tau_b'])}, Krippendorff's ordinal alpha"
                  f" {_shown(measured['krippendorff_alpha_ordinal'])}")
    else:
        agreed = "not measured: no comparison was ranked by two annotators"
    # sources are the workbench's own words; anything else is not shown in prose
    sources = ", ".join(f"{source if _WORD.fullmatch(source) else 'other'} {count}"
                        for source, count in facts["sources"].items())
    names = ("their user names" if settings.annotator_names
             else "`annotator-1`, `annotator-2`, ... in the order of their first ranking; names are left out")
    return f"""---
{header}---

# RLHF Workbench preferences

Rankings of model completions collected with the RLHF Workbench, exported with
`rlhf export --format hf`. Load a subset with `datasets.load_dataset(PATH, "preference")`
(or `"unpaired"`, `"rankings"`); each has one split, `{SPLIT}`.

| subset | rows | what it holds |
| --- | ---: | --- |
{subsets}

## How it was collected

- {facts['rankings']} rankings of {facts['comparisons']} comparisons, each of
  {' or '.join(map(str, facts['completions_per_comparison']))} completions ranked with ties allowed
  (rankings by source: {sources}).
- {facts['annotators']} annotators, named {names}.
- {facts['rounds']} rounds of collection; first ranking {facts['first_ranking']}, last {facts['last_ranking']}.
- Agreement {agreed}.
- Preference pairs: {settings.selection.replace('_', ' ')} pairs of each ranking; unpaired rows: the top
  group labelled true and the bottom group false, middle groups left out, except that a completion
  the annotator marked good or bad has that label.

## Licence

`{settings.license}`, as set by whoever exported it.
"""


def _size_category(rows: int) -> str:
    for limit, name in _SIZE_BINS:
        if rows < limit:
            return name
    return "n>10M"


def _figure(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _shown(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _day(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).date().isoformat()
