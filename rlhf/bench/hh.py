"""HH-RLHF pairs in a throw-away home, for the benchmarks that train on human preferences
(`reward_head`, `adapters`, `spin`).

A subset of the HH-RLHF file (`sample_pairs`: drawn at random, seeded, transcripts at most
`max_chars` characters) is imported into a fresh home with the `rlhf rankings import
--pairs` code, so each pair is a two-completion comparison (`hh_home`); `run_on_hh` then
runs each of a benchmark's jobs there as the workbench runs them (`rlhf.bench.train.run_method`).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rlhf.bench.serving import fresh_home
from rlhf.bench.train import run_method
from rlhf.collect.workbench import Workbench
from rlhf.errors import UserError
from rlhf.home import Home

HH_FILE = Path("shared") / "data" / "hh-rlhf-harmless-1600.jsonl"
PROMPT_SET = "hh"


def default_data() -> Path:
    """The HH-RLHF file in the `shared/` beside the checkout (a worktree one level further
    down finds it beside its parent's folder)."""
    repo = Path(__file__).resolve().parents[2]
    for root in (repo.parent, repo.parent.parent):
        if (root / HH_FILE).is_file():
            return root / HH_FILE
    raise UserError(f"No {HH_FILE} beside the checkout: give the HH-RLHF JSONL with --data.")


def sample_pairs(data: Path, pairs: int, max_chars: int, seed: int, out: Path) -> int:
    """Write `pairs` records of `data` (at most `max_chars` characters each transcript, 0:
    any), drawn at random with `seed`, to `out`; returns how many were written."""
    lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    if max_chars:
        lines = [line for line in lines
                 if max(len(value) for value in json.loads(line).values() if isinstance(value, str)) <= max_chars]
    chosen = random.Random(seed).sample(lines, min(pairs, len(lines)))
    out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return len(chosen)


@dataclass(frozen=True)
class HHHome:
    """A throw-away home holding HH-RLHF pairs: where it is, how many pairs were drawn and
    how many comparisons they became."""

    root: Path
    pairs: int
    imported: int


@contextmanager
def pairs_home(model_dir: Path, bench: str, write: Callable[[Path], int]) -> Iterator[HHHome]:
    """A fresh home (`fresh_home`, named for `bench`) on the base model of `model_dir`,
    initialised, with the pairs `write(path)` puts in a file inside it (returning how many)
    imported into the prompt set 'hh'; its store is closed again, and the whole home
    removed when the block ends."""
    root = fresh_home(model_dir, bench)
    try:
        subset = root / "hh.jsonl"
        written = write(subset)
        with Workbench(Home(root)) as wb:
            wb.init()
            imported = wb.import_pairs(subset, PROMPT_SET)
        yield HHHome(root, written, imported)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def hh_home(model_dir: Path, data: Path, pairs: int, max_chars: int, seed: int, bench: str):
    """`pairs_home` with `pairs` pairs of `data` drawn by `sample_pairs`."""
    return pairs_home(model_dir, bench, lambda subset: sample_pairs(data, pairs, max_chars, seed, subset))


def run_on_hh(model_dir: Path, data: Path, pairs: int, max_chars: int, seed: int, bench: str,
              runs: Sequence[tuple[str, dict]], extra: Callable[[dict, dict], dict] | None = None) -> dict:
    """Each (method, settings) of `runs` as a real job, one after the other, in one
    `hh_home`; each job's row (`run_method`), with what `extra(row, settings)` adds, is
    printed as one JSON line as soon as it is done. Returns ``pairs`` (drawn),
    ``imported`` (comparisons) and ``runs`` (the rows)."""
    rows = []
    with hh_home(model_dir, data, pairs, max_chars, seed, bench) as home, Workbench(Home(home.root)) as wb:
        for method, settings in runs:
            row = run_method(wb, method, settings, None)
            row.update(extra(row, settings) if extra is not None else {})
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"pairs": home.pairs, "imported": home.imported, "runs": rows}
