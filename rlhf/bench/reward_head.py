"""Feature-based reward head vs the LoRA reward model on human preferences:
`python -m rlhf.bench reward_head [--data FILE] [--pairs 200] [--lora-steps 30]`.

Both train as the workbench trains them (snapshot, worker subprocess, registration) in one
throw-away home, on the same rankings: HH-RLHF pairs (the file's own layout) imported with
the `rlhf rankings import --pairs` code, so each pair is a two-completion comparison, and
both jobs hold out the same comparisons (`split_by_comparison`, same `eval_fraction` and
seed). Reported: held-out pairwise accuracy and the job's time, and for the head a second
job on the same data, whose features come from the cache. The LoRA job is capped at
`--lora-steps` optimiser steps of 8 pairs (its default schedule on a few hundred pairs
runs far longer on a CPU); the head fits on all the training pairs. Pairs are drawn at
random (seeded) from those whose transcripts are at most `--max-chars` characters
(0: any), to keep a CPU run short. Prints figures, never asserts.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

from rlhf.bench.serving import fresh_home
from rlhf.bench.train import run_method
from rlhf.collect.workbench import Workbench
from rlhf.errors import UserError
from rlhf.home import Home

HH_FILE = Path("shared") / "data" / "hh-rlhf-harmless-1600.jsonl"


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


def bench_reward_head(model_dir: Path, data: Path, pairs: int, eval_fraction: float, lora_steps: int,
                      max_chars: int, seed: int, pooling: str) -> dict:
    root = fresh_home(model_dir)
    try:
        subset = Path(tempfile.mkdtemp(prefix="rlhf-bench-hh-")) / "hh.jsonl"
        written = sample_pairs(data, pairs, max_chars, seed, subset)
        shared = {"eval_fraction": eval_fraction, "seed": seed}
        with Workbench(Home(root)) as wb:
            wb.init()
            imported = wb.import_pairs(subset, "hh")
            runs = [("reward_head", {**shared, "pooling": pooling}), ("reward_head", {**shared, "pooling": pooling}),
                    ("reward", {**shared, "max_steps": lora_steps})]
            rows = []
            for method, settings in runs:
                row = run_method(wb, method, settings, None)
                row["settings"] = settings
                rows.append(row)
                print(json.dumps(row), flush=True)
        shutil.rmtree(subset.parent, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"data": str(data), "pairs": written, "imported": imported, "max_chars": max_chars,
            "eval_fraction": eval_fraction, "lora_steps": lora_steps, "runs": rows}


def print_table(result: dict) -> None:
    print(f"{result['imported']} HH-RLHF pairs (transcripts <= {result['max_chars'] or 'any'} chars),"
          f" {result['eval_fraction']:.0%} of them held out; LoRA capped at {result['lora_steps']} steps")
    print(f"{'method':<20} {'status':<10} {'held-out acc':>12} {'pairs':>6} {'job s':>7} {'train s':>8}"
          f" {'peak MiB':>9}")
    for n, row in enumerate(result["runs"]):
        label = row["method"] + (" (cached)" if n == 1 else "")
        accuracy = row.get("eval_accuracy")
        print(f"{label:<20} {row['status']:<10} {'' if accuracy is None else f'{accuracy:.3f}':>12}"
              f" {int(row.get('eval_pairs') or 0):>6} {row['total_seconds']:>7} {row['train_seconds'] or '':>8}"
              f" {row['peak_rss_mib'] or '':>9}")
        if row["error"]:
            print(f"             {row['error']}")
