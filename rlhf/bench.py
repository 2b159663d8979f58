"""Benchmarks: `python -m rlhf.bench generate [--model DIR] [--repeats N]`.

Prints medians over repeats, never asserts: this machine is shared, so read the
figures as ratios taken in one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from rlhf import home as home_module  # noqa
from rlhf.generate import SamplingParams, sample
from rlhf.models import load_policy

BENCH_PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about a lighthouse.",
    "Give me three tips for a job interview.",
    "What is the difference between a list and a tuple in Python?",
    "How do vaccines train the immune system?",
    "Suggest a name for a bakery that sells bread made with local grain.",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "How can I make my morning routine less rushed?",
]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_generate(model_dir: str, repeats: int, max_new_tokens: int) -> list[dict]:
    policy = load_policy(model_dir)
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    sample(policy, [[{"role": "user", "content": BENCH_PROMPTS[0]}]], k=2, params=params)  # warm-up
    rows = []
    for n_prompts in (1, 4, 8):
        conversations = [[{"role": "user", "content": p}] for p in BENCH_PROMPTS[:n_prompts]]
        rates, seconds = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            result = sample(policy, conversations, k=4, params=params, batch_prompts=n_prompts)
            elapsed = time.perf_counter() - start
            tokens = sum(s.num_tokens for samples in result for s in samples)
            rates.append(tokens / elapsed)
            seconds.append(elapsed)
        rows.append(
            {
                "case": f"{n_prompts} prompt{'s' if n_prompts > 1 else ''} x K=4",
                "tokens_per_s": round(statistics.median(rates), 1),
                "seconds": round(statistics.median(seconds), 2),
                "repeats": repeats,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    generate = sub.add_parser("generate", help="tokens/s of batched sampling on the default model")
    generate.add_argument("--home", default=None, help="workbench home whose base model to use")
    generate.add_argument("--model", default=None, help="model directory or hub id (default: the home's base)")
    generate.add_argument("--repeats", type=int, default=3)
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    model = args.model or str(home_module.ensure_default_model(home_module.resolve(args.home)))
    rows = bench_generate(model, args.repeats, args.max_new_tokens)
    summary = {
        "model": model,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "threads": torch.get_num_threads(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "results": rows,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {model} on {summary['device']} ({summary['threads']} threads), "
          f"max_new_tokens {args.max_new_tokens}, median of {args.repeats}")
    for row in rows:
        print(f"  {row['case']:<18} {row['tokens_per_s']:>8.1f} tokens/s  {row['seconds']:>7.2f} s")
    print(f"  peak memory: {summary['peak_rss_mib']} MiB RSS"
          + (f", {summary['peak_cuda_mib']} MiB CUDA" if summary["peak_cuda_mib"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
