"""`rlhf compare A B`: evaluate one policy version against another on a prompt set.

It samples from both versions and stores the evaluation, so it owns the store like the
other writing commands: while `rlhf serve` holds it, the command says so in one sentence
(use the Compare tab or the `evaluate_versions` endpoint of the server instead).
"""

from __future__ import annotations

import json
import math

from rlhf.compare import evaluate, summaries
from rlhf.home import BASE_VERSION
from rlhf.collect.workbench import DEFAULT_PROMPT_SET, Workbench


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def describe(result: dict) -> str:
    """The figures as a few lines of text (what `rlhf compare` prints without --json)."""
    a, b = result["version_a"], result["version_b"]
    prompts = f"prompt set '{result['prompt_set']}'" if result["prompt_set"] else "the given prompts"
    reward = f"reward model {result['reward_version']}" if result["reward_version"] else "no reward model"
    reference = f"KL from {result['reference']}" if result.get("reference") else "no KL reference"
    lines = [f"{a} vs {b} on {result['n']} prompts of {prompts} ({reward}; {reference}; "
             f"temperature {result['temperature']:g}, up to {result['max_new_tokens']} new tokens, seed {result['seed']}):"]
    if result["win_rate"] is None:
        lines.append("  win rate: — (no reward model to judge by: train one with `rlhf train reward`)")
    else:
        lines.append(f"  win rate of {a} over {b}: {_number(result['win_rate'])} "
                     f"({summaries.tally(result)})")
    width = max(len(a), len(b), len("version"))
    lines.append(f"  {'version':<{width}}  {'mean reward':>11}  {'mean length':>11}  {'ended (EOS)':>11}  "
                 f"{'KL':>9}  {'KL s.e.':>8}")
    for side, name in (("a", a), ("b", b)):
        lines.append(f"  {name:<{width}}  {_number(result[f'mean_reward_{side}']):>11}  "
                     f"{_number(result[f'mean_length_{side}'], 1):>11}  {_number(result[f'eos_rate_{side}'], 2):>11}  "
                     f"{_number(result[f'kl_{side}']):>9}  {_number(result[f'kl_stderr_{side}']):>8}")
    for dimension, figures in (result.get("dimensions") or {}).items():   # the reward models of a combination
        lines.append(f"  {dimension}: win rate {_number(figures['win_rate'])}, mean reward"
                     f" {_number(figures['mean_reward_a'])} ({a}) and {_number(figures['mean_reward_b'])} ({b})")
    if result.get("id") is not None:
        lines.append(f"Stored as evaluation {result['id']} ({result['seconds']:.1f} s).")
    return "\n".join(lines)


def cmd_compare(wb: Workbench, args) -> int:
    result = evaluate.evaluate(wb, args.version_a, args.version_b, args.prompts, reward_version=args.reward,
                               n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                               reference=args.reference, temperature=args.temperature, created_by="cli")
    if args.json:
        from app.job_views import jsonable  # NaN (a standard error of one sample) is not JSON: null

        print(json.dumps(jsonable(result)))
    else:
        print(describe(result))
    return 0


def add_commands(command, commands, home_option, json_option) -> None:
    compare = command(
        "compare", cmd_compare,
        "evaluate policy version A against B on a prompt set: win rate under a reward model, mean reward, "
        "length and KL from the reference (stored with the evaluations)",
        parents=(home_option, json_option),
        epilog="KL is the k1 estimate (Schulman 2020, 'Approximating KL Divergence'): the mean over samples of "
        "the sum over tokens of log p_version - log p_reference, on each version's own samples.")
    compare.add_argument("version_a", metavar="A", help="policy version")
    compare.add_argument("version_b", metavar="B", help="policy version to compare it with")
    compare.add_argument("--prompts", default=DEFAULT_PROMPT_SET, metavar="SET",
                         help=f"held-out prompt set (default '{DEFAULT_PROMPT_SET}'); its first N prompts")
    compare.add_argument("--n", type=int, default=evaluate.DEFAULT_N,
                         help=f"prompts, one sample per version each (default {evaluate.DEFAULT_N})")
    compare.add_argument("--reward", metavar="VERSION", help="reward model (default: the newest, if any)")
    compare.add_argument("--reference", default=BASE_VERSION, metavar="VERSION",
                         help=f"policy the KL is measured from (default '{BASE_VERSION}')")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--max-new-tokens", type=int, default=evaluate.DEFAULT_MAX_NEW_TOKENS)
    compare.add_argument("--temperature", type=float, default=evaluate.DEFAULT_TEMPERATURE)
