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
import shutil
from pathlib import Path

from rlhf.bench.serving import fresh_home
from rlhf.bench.train import run_method
from rlhf.collect.formats import read_preference_pairs
from rlhf.collect.workbench import Workbench
from rlhf.home import Home
from rlhf.jobs.files import read_log
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

    root = fresh_home(model_dir, "hh-reward")
    try:
        train_file, held_file = split_lines(data, held_out, seed, root)
        with Workbench(Home(root)) as wb:
            wb.init()
            imported = wb.import_pairs(train_file, "hh")
            row = run_method(wb, "reward", settings, None)
            if row["status"] != "succeeded":
                return {"imported": imported, "settings": settings, "job": row}
            log = read_log(Jobs(wb.home, wb.store).job_dir(row["job_id"]))
            schedule = [line.split("Schedule: ", 1)[1] for line in log.splitlines() if "Schedule: " in line]
            held = evaluate_pairs(RewardScorer(wb.model_version(row["version"]).path), read_preference_pairs(held_file))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"data": str(data), "imported": imported, "held_out": held_out, "seed": seed, "settings": settings,
            "schedule": schedule[0] if schedule else None, "job": row, "held_out_figures": held}


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
