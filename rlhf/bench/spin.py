"""SPIN on the default model: `python -m rlhf.bench spin [--pairs 100] [--iterations 2]`.

Does self-play fine-tuning raise the policy's log-likelihood of held-out human answers,
iteration after iteration? HH-RLHF pairs (the file of `rlhf.bench.reward_head`, drawn at
random, seeded, transcripts at most `--max-chars` characters) are imported as rankings
into a throw-away home with the `rlhf rankings import --pairs` code, so each chosen answer
is an imported chosen answer, a human answer SPIN learns from. One `spin` job with the
default settings (but `--iterations`) then runs as `rlhf train` runs it (snapshot, worker
subprocess, registration). It holds out `eval_fraction` of the comparisons (split by
comparison, seeded) and reports the mean summed log-likelihood of their chosen answers
under the base (iteration 0) and after each iteration. Also printed: the versions it
registered with their parents, and the job's time. Prints figures, never asserts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rlhf.bench.reward_head import sample_pairs
from rlhf.bench.serving import fresh_home
from rlhf.bench.train import run_method
from rlhf.collect.workbench import Workbench
from rlhf.home import Home
from storage import models


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=None, help="HH-RLHF JSONL (default: ../shared/data/hh-rlhf-harmless-1600.jsonl)")
    parser.add_argument("--pairs", type=int, default=60, help="pairs drawn at random from the file")
    parser.add_argument("--max-chars", type=int, default=400, help="only pairs with transcripts this short (0: any)")
    parser.add_argument("--iterations", type=int, default=2, help="SPIN iterations (the method's default is 2)")
    parser.add_argument("--eval-fraction", type=float, default=0.25, help="share of comparisons held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", default=None, help="workbench home whose base model to use")
    parser.add_argument("--json", action="store_true")


def bench_spin(model_dir: Path, data: Path, pairs: int, max_chars: int, iterations: int, eval_fraction: float,
               seed: int) -> dict:
    root = fresh_home(model_dir)
    subset = Path(tempfile.mkdtemp(prefix="rlhf-bench-spin-")) / "hh.jsonl"
    try:
        written = sample_pairs(data, pairs, max_chars, seed, subset)
        settings = {"iterations": iterations, "eval_fraction": eval_fraction, "seed": seed}
        with Workbench(Home(root)) as wb:
            wb.init()
            imported = wb.import_pairs(subset, "hh")
            row = run_method(wb, "spin", settings, None)
            final = models.get(wb.store.cursor(), row["version"]) if row["version"] else None
            metrics = json.loads(final["metrics"]) if final is not None else {}
            versions = models.list_versions(wb.store.cursor())
            lineage = [(name, parent) for name, parent, method in
                       zip(versions["name"], versions["parent"], versions["method"]) if method == "spin"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(subset.parent, ignore_errors=True)
    logp = [metrics.get(f"spin/heldout_logp/{t}") for t in range(iterations + 1)]
    return {"data": str(data), "pairs": written, "imported": imported, "max_chars": max_chars,
            "eval_fraction": eval_fraction, "iterations": iterations, "heldout_answers": metrics.get("eval/examples"),
            "train_pairs": metrics.get("train/examples"), "heldout_logp": logp, "lineage": lineage,
            "guard": {k: v for k, v in metrics.items() if k.startswith("guard/")}, **row}


def print_table(result: dict) -> None:
    print(f"SPIN on {result['imported']} HH-RLHF pairs (transcripts <= {result['max_chars'] or 'any'} chars),"
          f" {result['eval_fraction']:.0%} of the comparisons held out ({result['heldout_answers']} human answers),"
          f" {result['train_pairs']} self-play pairs in the last iteration")
    print(f"job {result['status']} in {result['total_seconds']} s (training {result['train_seconds']} s,"
          f" peak {result['peak_rss_mib']} MiB)" + (f": {result['error']}" if result["error"] else ""))
    print(f"{'iteration':>9} {'held-out log-likelihood of the human answers':>46}")
    for t, value in enumerate(result["heldout_logp"]):
        print(f"{t:>9} {'' if value is None else f'{value:.1f}':>46}")
    print("versions: " + ", ".join(f"{name} (parent {parent})" for name, parent in result["lineage"]))
