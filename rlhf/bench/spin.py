"""SPIN on the default model: `python -m rlhf.bench spin [--pairs 60] [--iterations 2]`.

Does self-play fine-tuning raise the policy's log-likelihood of held-out human answers,
iteration after iteration? HH-RLHF pairs (`rlhf.bench.hh`: drawn at
random, seeded, transcripts at most `--max-chars` characters) are imported as rankings
into a throw-away home with the `rlhf rankings import --pairs` code, so each chosen answer
is an imported chosen answer, a human answer SPIN learns from. The `spin` job's snapshot
is cut as `rlhf train spin` cuts it (`Jobs.prepare`, default settings but `--iterations`)
and trained here, in this process, on `--threads` torch threads (a job's worker takes
every core, and on two shared cores two OpenMP threads wait on each other: a step took
35 s there). It holds out `eval_fraction` of the comparisons (split by comparison,
seeded) and reports the mean summed log-likelihood of their chosen answers under the base
(iteration 0) and after each iteration, the iterations' DPO reward margins, the
guardrails and the time. Each iteration is capped at `--max-steps` optimiser steps (the
default schedule's 40-step floor ran 16 minutes an iteration on the shared CPU). Prints figures, never asserts.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from pathlib import Path

from rlhf.bench.hh import hh_home
from rlhf.collect.workbench import Workbench
from rlhf.home import Home
from rlhf.jobs.service import JobRequest, Jobs


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=None, help="HH-RLHF JSONL (default: ../shared/data/hh-rlhf-harmless-1600.jsonl)")
    parser.add_argument("--pairs", type=int, default=40, help="pairs drawn at random from the file")
    parser.add_argument("--max-chars", type=int, default=400, help="only pairs with transcripts this short (0: any)")
    parser.add_argument("--iterations", type=int, default=2, help="SPIN iterations (the method's default is 2)")
    parser.add_argument("--eval-fraction", type=float, default=0.25, help="share of comparisons held out")
    parser.add_argument("--max-steps", type=int, default=16, help="cap on each iteration's optimiser steps of 4 pairs"
                        " (0: the default schedule, at least 40 steps, which on a shared CPU runs far longer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (on 2 shared cores 1 is fastest)")
    parser.add_argument("--home", default=None, help="workbench home whose base model to use")
    parser.add_argument("--json", action="store_true")


def bench_spin(model_dir: Path, data: Path, pairs: int, max_chars: int, iterations: int, eval_fraction: float,
               seed: int, threads: int, max_steps: int) -> dict:
    import torch

    from rlhf.train import spin
    from rlhf.train.common import Reporter, TrainInputs

    torch.set_num_threads(threads)
    settings = {"iterations": iterations, "eval_fraction": eval_fraction, "seed": seed,
                **({"max_steps": max_steps} if max_steps else {})}
    with hh_home(model_dir, data, pairs, max_chars, seed, "spin") as home:
        with Workbench(Home(home.root)) as wb:
            prepared = Jobs(wb.home, wb.store).prepare(JobRequest("spin", settings=settings))
        spec, out = prepared.spec, home.root / "bench-spin" / "model"
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints each step's log: stdout is the result's
            metrics = spin.train(TrainInputs(prepared.rows, Path(spec["base_path"]), out, spec["config"], spec["options"],
                                             reporter=Reporter(), given=frozenset(spec["settings"])))
        seconds = time.perf_counter() - started
        margins = [spin.iteration_metrics(folder).get("train/rewards/margins") for folder in spin.iteration_dirs(out)]
    return {"data": str(data), "pairs": home.pairs, "imported": home.imported, "max_chars": max_chars,
            "eval_fraction": eval_fraction, "iterations": iterations, "threads": threads, "max_steps": max_steps,
            "heldout_answers": metrics.get("eval/examples"), "train_pairs": metrics.get("train/examples"),
            "heldout_logp": [metrics.get(f"spin/heldout_logp/{t}") for t in range(iterations + 1)],
            "train_margins": margins + [metrics.get("train/rewards/margins")],
            "guard": {k: v for k, v in metrics.items() if k.startswith("guard/")}, "seconds": round(seconds, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def print_table(result: dict) -> None:
    print(f"SPIN on {result['imported']} HH-RLHF pairs (transcripts <= {result['max_chars'] or 'any'} chars),"
          f" {result['eval_fraction']:.0%} of the comparisons held out ({result['heldout_answers']:.0f} human answers),"
          f" {result['train_pairs']:.0f} self-play pairs an iteration, {result['max_steps'] or 'scheduled'} steps each;"
          f" {result['seconds']} s on {result['threads']}"
          f" thread(s), peak {result['peak_rss_mib']} MiB")
    print(f"{'iteration':>9} {'held-out log-likelihood of the human answers':>46} {'train DPO margin':>17}")
    for t, value in enumerate(result["heldout_logp"]):
        margin = result["train_margins"][t - 1] if t else None
        print(f"{t:>9} {'' if value is None else f'{value:.1f}':>46} {'' if margin is None else f'{margin:.2f}':>17}")
    guard = result["guard"]
    print(f"guardrails of the last iteration against the base: held-out accuracy {guard.get('guard/heldout_accuracy')},"
          f" KL {guard.get('guard/kl')}, repetition {guard.get('guard/repetition')}")
