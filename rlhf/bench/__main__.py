"""Benchmarks: `python -m rlhf.bench generate|first|annotate|service|train|train_step|reward_head|hh_reward|adapters|learn|thompson|scale|load|spin` (see --help of each).

Prints medians over repeats, never asserts: this machine is shared, so read the
figures as ratios taken in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from rlhf.bench.annotate import bench_annotate, bench_service
from rlhf.bench.first import bench_first
from rlhf.bench.generate import bench_engines, bench_generate, peak_rss_mib, print_engines
from rlhf.home import Home
from rlhf.modeling.default_model import ensure_default_model


def show(result, as_json: bool, print_table: Callable[[Any], None]) -> None:
    """A benchmark's result as JSON when asked (`--json`), else as its table."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    generate = sub.add_parser("generate", help="tokens/s of the workbench's sampler beside CTranslate2 int8 and "
                              "float32 on the default model (8 prompts x K=4)")
    generate.add_argument("--home", default=None, help="workbench home whose base model to use")
    generate.add_argument("--model", default=None, help="model directory or hub id (default: the home's base)")
    generate.add_argument("--repeats", type=int, default=3)
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--threads", type=int, default=2, help="CPU threads for every engine")
    generate.add_argument("--levers", action="store_true",
                          help="also the sampler with a lever switched off (transformers' full-sort top-p)")
    generate.add_argument("--batching", action="store_true",
                          help="instead: the sampler on 1, 4 and 8 prompts, batched and one prompt per call")
    generate.add_argument("--no-reference", action="store_true", help="with --batching: skip one prompt per call")
    generate.add_argument("--json", action="store_true")
    annotate = sub.add_parser("annotate", help="submit-to-next-comparison latency through a served workbench")
    annotate.add_argument("--home", default=None, help="workbench home whose base model to use")
    annotate.add_argument("--submissions", type=int, default=40)
    annotate.add_argument("--ready-target", type=int, default=64,
                          help="comparisons the pre-generator wants beyond the pre-filled queue, so that it samples "
                          "all through the run (0: it stays idle)")
    service = sub.add_parser("service", help="the annotation service's own ms per submit-and-next, in-process "
                             "(no Gradio, no network)")
    service.add_argument("--annotators", type=int, default=50)
    service.add_argument("--rankings", type=int, default=300)
    first = sub.add_parser("first", help="seconds from `rlhf serve` answering on a fresh home to the first "
                           "comparison an annotator gets")
    first.add_argument("--home", default=None, help="workbench home whose base model to use")
    first.add_argument("--model", default=None, help="base model directory (default: the home's base)")
    first.add_argument("--repeats", type=int, default=3, help="fresh homes, one server each")
    train = sub.add_parser("train", help="each training method on the default model: s/step, examples/s, memory")
    train.add_argument("--methods", default="reward,sft,dpo,kto,ppo,grpo,rloo",
                       help="comma-separated; ppo/grpo/rloo use the reward model trained first")
    train.add_argument("--pairs", type=int, default=200, help="preference pairs in the standard offline job")
    train.add_argument("--home", default=None, help="keep the bench home here (default: a temporary directory)")
    train.add_argument("--reference", action="store_true",
                       help="after the DPO job, plain TRL's DPOTrainer on the same rows and settings")
    train.add_argument("--json", action="store_true")
    step = sub.add_parser("train_step", help="one LoRA DPO-sized training step of the default model, fp32 against bf16"
                          " autocast, taken in turn")
    step.add_argument("--home", default=None, help="workbench home whose base model to use")
    step.add_argument("--pairs", type=int, default=4, help="pairs in the batch (2 sequences each)")
    step.add_argument("--tokens", type=int, default=192, help="tokens per sequence")
    step.add_argument("--repeats", type=int, default=5)
    step.add_argument("--threads", type=int, default=2)
    step.add_argument("--json", action="store_true")
    head = sub.add_parser("reward_head", help="the feature-based reward head beside the LoRA reward model on"
                          " HH-RLHF pairs: held-out accuracy and time (see rlhf/bench/reward_head.py)")
    head.add_argument("--data", default=None, help="HH-RLHF JSONL (default: ../shared/data/hh-rlhf-harmless-1600.jsonl)")
    head.add_argument("--pairs", type=int, default=200, help="pairs drawn at random from the file")
    head.add_argument("--eval-fraction", type=float, default=0.25, help="share of pairs held out (both methods)")
    head.add_argument("--lora-steps", type=int, default=30, help="cap on the LoRA reward model's optimiser steps")
    head.add_argument("--max-chars", type=int, default=600, help="only pairs with transcripts this short (0: any)")
    head.add_argument("--pooling", default="last", choices=("last", "mean"))
    head.add_argument("--seed", type=int, default=0)
    head.add_argument("--home", default=None, help="workbench home whose base model to use")
    head.add_argument("--json", action="store_true")
    adapters = sub.add_parser("adapters", help="each adapter on DPO on the default model: trainable parameters,"
                              " s/step, peak memory, held-out margin (see rlhf/bench/adapters.py)")
    adapters.add_argument("--adapters", default=",".join(("lora", "prompt", "prefix", "ia3", "bottleneck_serial",
                                                           "bottleneck_parallel", "last_layers", "full")))
    adapters.add_argument("--data", default=None, help="HH-RLHF JSONL (default: ../shared/data/hh-rlhf-harmless-1600.jsonl)")
    adapters.add_argument("--pairs", type=int, default=96, help="pairs drawn at random from the file")
    adapters.add_argument("--steps", type=int, default=12, help="DPO optimiser steps for every adapter")
    adapters.add_argument("--eval-fraction", type=float, default=0.25, help="share of pairs held out")
    adapters.add_argument("--max-chars", type=int, default=400, help="only pairs with transcripts this short (0: any)")
    adapters.add_argument("--seed", type=int, default=0)
    adapters.add_argument("--home", default=None, help="workbench home whose base model to use")
    adapters.add_argument("--json", action="store_true")
    from rlhf.bench.learn import add_arguments as learn_arguments

    learn_arguments(sub.add_parser("learn", help="does one round of simulated rankings with default settings teach"
                                   " each rule? (see rlhf/bench/learn.py)"))
    thompson = sub.add_parser("thompson", help="reward-head held-out accuracy against rankings, candidates shown at"
                              " random or by double Thompson sampling (see rlhf/bench/thompson.py)")
    thompson.add_argument("--annotator", default="longer", help="simulated annotator spec (rlhf demo --annotator)")
    thompson.add_argument("--budgets", default="20,40,80,160", help="rankings at which accuracy is measured")
    thompson.add_argument("--seeds", default="0,1,2,3,4")
    thompson.add_argument("--m", type=int, default=8, help="candidates per prompt")
    thompson.add_argument("--k", type=int, default=4, help="completions shown per ranking")
    thompson.add_argument("--max-new-tokens", type=int, default=32)
    thompson.add_argument("--prompts", type=int, default=183, help="the first N shipped prompts (a smaller pool is "
                          "ranked again as the budget grows)")
    thompson.add_argument("--held-out", type=int, default=23, help="of them, never ranked: accuracy is on their pairs")
    thompson.add_argument("--cache", default=None, help="keep candidates and features here (default: <home>/bench-thompson)")
    thompson.add_argument("--plot", default=None, help="write the figure to this PNG")
    thompson.add_argument("--home", default=None, help="workbench home whose base model to use")
    thompson.add_argument("--json", action="store_true")
    hh_reward = sub.add_parser("hh_reward", help="the default reward job on HH-RLHF pairs: accuracy on rows held"
                               " out by line, with its 95%% interval (see rlhf/bench/hh_reward.py)")
    hh_reward.add_argument("--data", default=None, help="HH-RLHF JSONL (default: ../shared/data/hh-rlhf-harmless-1600.jsonl)")
    hh_reward.add_argument("--held-out", type=int, default=200, help="rows held out (never imported), by a seeded shuffle")
    hh_reward.add_argument("--seed", type=int, default=0)
    hh_reward.add_argument("--set", action="append", metavar="KEY=VALUE", help="a reward job setting; repeatable")
    hh_reward.add_argument("--home", default=None, help="workbench home whose base model to use")
    hh_reward.add_argument("--json", action="store_true")
    from rlhf.bench.spin import add_arguments as spin_arguments

    spin_arguments(sub.add_parser("spin", help="SPIN on the default model: held-out log-likelihood of human answers"
                                  " per iteration (see rlhf/bench/spin.py)"))
    from rlhf.bench.scale import add_arguments as scale_arguments

    scale_arguments(sub.add_parser("scale", help="what a home of many rankings costs: the Data tab, the exports,"
                                   " a backup and its restore on a synthetic store (see rlhf/bench/scale.py)"))
    sub.add_parser("load", add_help=False,
                   help="many annotators against a real server that is killed midway (see load --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:  # its own options: rlhf.bench.load
        from rlhf.bench.load import main as load_main

        return load_main(argv[1:])
    args = parser.parse_args(argv)
    import torch  # only for the benchmarks that load a model
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    if args.what == "scale":
        from rlhf.bench.scale import run as scale_run

        return scale_run(args)
    if args.what == "spin":
        from rlhf.bench.hh import default_data
        from rlhf.bench.spin import bench_spin, print_table as print_spin

        result = bench_spin(ensure_default_model(Home.resolve(args.home)), Path(args.data or default_data()),
                            args.pairs, args.max_chars, args.iterations, args.eval_fraction, args.seed, args.threads,
                            args.max_steps)
        show(result, args.json, print_spin)
        return 0
    if args.what == "learn":
        from rlhf.bench.learn import main as learn_main

        return learn_main(args)
    if args.what == "train":
        from rlhf.bench.train import bench_train, print_table

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        rows = bench_train(methods, args.pairs, args.home, keep=bool(args.home), reference=args.reference)
        show(rows, args.json, print_table)
        return 0
    if args.what == "train_step":
        from rlhf.bench.train_step import bench_train_step, print_result

        result = bench_train_step(ensure_default_model(Home.resolve(args.home)), args.pairs, args.tokens, args.repeats,
                                  args.threads)
        show(result, args.json, print_result)
        return 0
    if args.what == "reward_head":
        from rlhf.bench.hh import default_data
        from rlhf.bench.reward_head import bench_reward_head, print_table as print_head

        result = bench_reward_head(ensure_default_model(Home.resolve(args.home)), Path(args.data or default_data()),
                                   args.pairs, args.eval_fraction, args.lora_steps, args.max_chars, args.seed,
                                   args.pooling)
        show(result, args.json, print_head)
        return 0
    if args.what == "hh_reward":
        from rlhf.bench.hh import default_data
        from rlhf.bench.hh_reward import bench_hh_reward, print_table as print_hh
        from rlhf.train.methods import parse_assignments

        result = bench_hh_reward(ensure_default_model(Home.resolve(args.home)), Path(args.data or default_data()),
                                 args.held_out, args.seed, parse_assignments(args.set or []))
        show(result, args.json, print_hh)
        return 0
    if args.what == "adapters":
        from rlhf.bench.adapters import bench_adapters, print_table as print_adapters
        from rlhf.bench.hh import default_data

        result = bench_adapters(ensure_default_model(Home.resolve(args.home)), Path(args.data or default_data()),
                                [a.strip() for a in args.adapters.split(",") if a.strip()], args.pairs, args.steps,
                                args.eval_fraction, args.max_chars, args.seed)
        show(result, args.json, print_adapters)
        return 0
    if args.what == "thompson":
        from rlhf.bench import thompson as bench_ts

        home = Home.resolve(args.home)
        numbers = lambda text: tuple(int(x) for x in text.split(",") if x.strip())  # noqa: E731
        settings = bench_ts.ThompsonBench(annotator=args.annotator, budgets=numbers(args.budgets),
                                          seeds=numbers(args.seeds), m=args.m, k=args.k,
                                          max_new_tokens=args.max_new_tokens, prompts=args.prompts,
                                          held_out=args.held_out)
        result = bench_ts.bench_thompson(ensure_default_model(home),
                                         Path(args.cache) if args.cache else home.root / "bench-thompson", settings)
        show(result, args.json, bench_ts.print_table)
        if args.plot:
            bench_ts.plot(result, args.plot)
        return 0
    if args.what == "service":
        print(json.dumps(bench_service(args.annotators, args.rankings), indent=2))
        return 0
    if args.what == "first":
        model_dir = Path(args.model) if args.model else ensure_default_model(Home.resolve(args.home))
        print(json.dumps(bench_first(model_dir, args.repeats), indent=2))
        return 0
    if args.what == "annotate":
        result = bench_annotate(ensure_default_model(Home.resolve(args.home)), args.submissions, args.ready_target)
        print(json.dumps(result, indent=2))
        return 0
    model = args.model or str(ensure_default_model(Home.resolve(args.home)))
    torch.set_num_threads(args.threads)
    if not args.batching:
        result = bench_engines(model, args.repeats, args.max_new_tokens, args.threads, args.levers)
        if args.json:
            print(json.dumps({"model": model, "threads": args.threads, "max_new_tokens": args.max_new_tokens,
                              **result}, indent=2))
            return 0
        print_engines(model, args.threads, args.max_new_tokens, result)
        return 0
    rows = bench_generate(model, args.repeats, args.max_new_tokens, not args.no_reference)
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
        print(f"  {row['path']:<24} {row['case']:<16} {row['tokens_per_s']:>7.1f} tokens/s {row['seconds']:>7.2f} s")
    print(f"  peak memory: {summary['peak_rss_mib']} MiB RSS"
          + (f", {summary['peak_cuda_mib']} MiB CUDA" if summary["peak_cuda_mib"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
