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

from pathlib import Path

from rlhf.bench.hh import run_on_hh


def bench_reward_head(model_dir: Path, data: Path, pairs: int, eval_fraction: float, lora_steps: int,
                      max_chars: int, seed: int, pooling: str) -> dict:
    shared = {"eval_fraction": eval_fraction, "seed": seed}
    runs = [("reward_head", {**shared, "pooling": pooling}), ("reward_head", {**shared, "pooling": pooling}),
            ("reward", {**shared, "max_steps": lora_steps})]
    result = run_on_hh(model_dir, data, pairs, max_chars, seed, "reward-head", runs,
                       lambda row, settings: {"settings": settings})
    return {"data": str(data), **result, "max_chars": max_chars, "eval_fraction": eval_fraction,
            "lora_steps": lora_steps}


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
