"""The default reward job on real human preferences: `python -m rlhf.bench hh_reward
[--data FILE] [--held-out 200] [--set KEY=VALUE ...]`.

Issue 10's measure of a reward model on real data. The HH-RLHF file (the dataset's own
layout, `../shared/data/hh-rlhf-harmless-1600.jsonl` by default) is split by line with a
seeded shuffle: `--held-out` rows are written apart and never imported; the rest are
imported with the `rlhf rankings import --pairs` code into a throw-away home, one
two-completion comparison each. One `reward` job trains on them as `rlhf train reward`
would (its own settings, `--set` on top; it holds out its own `eval_fraction` of the
comparisons and reports `eval/accuracy` on them). Then the new version scores the held-out
rows as `rlhf eval-reward` does: pairwise accuracy with its 95% Wilson interval. Prints
figures, never asserts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rlhf.bench.hh import pairs_home
from rlhf.bench.train import decided_schedule, run_method
from rlhf.collect.formats import read_preference_pairs
from rlhf.collect.workbench import Workbench
from rlhf.home import Home
from rlhf.jobs.service import Jobs


def split_lines(data: Path, held_out: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """`data`'s non-empty lines shuffled with `seed`: the first `held_out` to
    `folder/held-out.jsonl`, the rest to `folder/train.jsonl`."""
    lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)
    train, held = folder / "train.jsonl", folder / "held-out.jsonl"
    held.write_text("\n".join(lines[:held_out]) + "\n", encoding="utf-8")
    train.write_text("\n".join(lines[held_out:]) + "\n", encoding="utf-8")
    return train, held


def bench_hh_reward(model_dir: Path, data: Path, held_out: int, seed: int, settings: dict) -> dict:
    from rlhf.modeling.scoring import RewardScorer, evaluate_pairs

    def write(subset: Path) -> int:   # the training rows into the file the home imports
        train, _ = split_lines(data, held_out, seed, subset.parent)
        train.replace(subset)
        return len(subset.read_text(encoding="utf-8").splitlines())

    with pairs_home(model_dir, "hh-reward", write) as home, Workbench(Home(home.root)) as wb:
        row = run_method(wb, "reward", settings, None)
        if row["status"] != "succeeded":
            return {"imported": home.imported, "settings": settings, "job": row}
        held = read_preference_pairs(home.root / "held-out.jsonl")
        figures = evaluate_pairs(RewardScorer(wb.model_version(row["version"]).path), held)
        schedule = decided_schedule(Jobs(wb.home, wb.store), row["job_id"])
    return {"data": str(data), "imported": home.imported, "held_out": held_out, "seed": seed, "settings": settings,
            "schedule": schedule, "job": row, "held_out_figures": figures}


def print_table(result: dict) -> None:
    job = result["job"]
    print(f"{result['imported']} HH-RLHF pairs trained on (the job held out its own eval_fraction),"
          f" {result.get('held_out')} held out by line; settings {json.dumps(result['settings'])}")
    if job["status"] != "succeeded":
        print(f"reward job {job['status']}: {job['error']}")
        return
    held = result["held_out_figures"]
    print(f"schedule: {result['schedule']}")
    print(f"steps {job['steps']}, {job['seconds_per_step']} s/step, training {job['train_seconds']} s,"
          f" peak {job['peak_rss_mib']} MiB")
    print(f"job's own held-out comparisons: accuracy {job.get('eval_accuracy')} on {job.get('eval_pairs')} pairs")
    print(f"held-out rows ({held['pairs']}): accuracy {held['accuracy']:.3f}"
          f" [{held['accuracy_low']:.3f}, {held['accuracy_high']:.3f}] (95% Wilson), {held['ties']} scored equal,"
          f" mean margin {held['mean_margin']:.3f}")
