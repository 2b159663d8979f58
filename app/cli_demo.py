"""`rlhf demo`: the loop end to end on a fresh home, with a simulated annotator."""

from __future__ import annotations

import json
import sys
import tempfile
import time

from rlhf.home import Home

COLUMNS = ("round", "rankings", "reward_eval_accuracy", "policy_version", "win_rate_vs_base", "mean_chars",
           "base_mean_chars")


def cmd_demo(home: Home, args) -> int:
    from rlhf.bench.demo import DemoConfig, run_demo  # torch: only when the demo runs

    if args.home is None:  # never the user's own ./workbench
        home = Home.resolve(tempfile.mkdtemp(prefix="rlhf-demo-"))
    config = DemoConfig(rounds=args.rounds, annotator=args.annotator, method=args.method,
                        prompts_per_round=args.prompts_per_round, held_out=args.held_out,
                        max_new_tokens=args.max_new_tokens)
    started = time.monotonic()
    print(f"Demo in {home.root}: {config.rounds} round(s), annotator '{config.annotator}', method {config.method},"
          f" {config.prompts_per_round} comparisons of K={config.k} per round.", file=sys.stderr)
    if not args.json:
        print(" | ".join(COLUMNS))

    def report(row: dict) -> None:
        if not args.json:
            print(" | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS),
                  flush=True)

    def step(line: str) -> None:
        elapsed = int(time.monotonic() - started)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {line}", file=sys.stderr, flush=True)

    rows = run_demo(home, config, report, step)
    if args.plot:
        from rlhf.bench.demo import plot_rounds  # matplotlib: only when asked

        plot_rounds(rows, config, args.plot)
        print(f"Plot written to {args.plot}.", file=sys.stderr)
    minutes = (time.monotonic() - started) / 60
    if args.json:
        print(json.dumps({"home": str(home.root), "minutes": round(minutes, 1), "rounds": rows}))
    else:
        print(f"Done in {minutes:.1f} min. Open it: rlhf serve --home {home.root}")
    return 0


def add_commands(command, commands, home_option, json_option) -> None:
    from rlhf.bench.demo import DEMO_METHODS, DemoConfig

    defaults = DemoConfig()
    demo = command("demo", cmd_demo, "run the whole loop on a fresh home with a simulated annotator",
                   parents=(home_option, json_option),
                   epilog="Annotators: shorter, longer, mentions:W,W, avoids:W, combined with + and weights"
                   " (2*mentions:please), noise after @ (flip=P, tie=P, seed=N), e.g. 'shorter@flip=0.1'.")
    demo.add_argument("--rounds", type=int, default=defaults.rounds)
    demo.add_argument("--annotator", default=defaults.annotator, help=f"simulated annotator (default {defaults.annotator})")
    demo.add_argument("--method", choices=DEMO_METHODS, default=defaults.method)
    demo.add_argument("--prompts-per-round", type=int, default=defaults.prompts_per_round)
    demo.add_argument("--held-out", type=int, default=defaults.held_out, help="prompts kept for judging")
    demo.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    demo.add_argument("--plot", metavar="FILE.png", help="also draw the win rate by round into this image")
    demo.set_defaults(without_store=True)
