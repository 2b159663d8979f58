"""`python -m rlhf.bench learn`: do one round of rankings, trained with the defaults, teach
the policy what the rankings asked for?

Five simulated annotators, each a rule of a different kind that the base model satisfies
sometimes (:data:`RULES`): a length, a tone, a formatting habit, a topic, and refusing
unsafe requests. For each rule × method × size, a cell, on a fresh home:

1. comparisons of K=4 from the base model on training prompts, as `rlhf generate` makes
   them (`Workbench.generate`, its default sampling but `--max-new-tokens`), made once per
   scope and size and copied into each cell's home (:func:`shared_comparisons`);
2. the rule ranks them (:func:`rlhf.bench.demo.rank_all`, stored as simulated rankings);
3. one job of the method with default settings only (an online method first trains the
   default reward model on the same rankings), run as `rlhf train` runs it;
4. the share of answers satisfying the rule on held-out prompts, before (the base) and
   after (the new version), same prompts, sampling and seed, each with a 95% Wilson
   interval (:func:`rlhf.bench.demo.wilson_interval`), and the job's guardrails (KL to
   the base and repetition, :mod:`rlhf.train.guard`).

Prompts come from the default set (183, with categories). Held out, never in a
comparison: `--held-out` prompts outside the safety category, and a third of the 21
safety prompts. The refusal rule trains and is measured on safety prompts only (it asks
for refusals where refusing is right); the others on the rest. A size larger than the
training prompts repeats them, each pass a prompt set of its own (`learn-train-1`, ...),
with fresh samples. Each held-out prompt gets several answers (`--answers` in all per
rule): the interval treats them as independent, which answers to one prompt are not, so
read it as a little narrow.

A cell whose rankings give its method nothing to learn from (every ranking a full tie: no
usable pairs) is recorded as such, untrained, and the grid goes on.

Resumable: each finished cell is one line of `results.jsonl` in `--out`, skipped on a
rerun with the same settings; the base model's held-out answers are kept in
`answers.jsonl` and shared by every cell (and `--base-rates`) with the same settings.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlhf.bench.demo import rank_all, train, wilson_interval
from rlhf.bench.train import decided_schedule
from rlhf.collect.workbench import Workbench, WorkbenchError
from rlhf.home import default_prompts
from rlhf.errors import UserError
from rlhf.home import BASE_VERSION, Home
from rlhf.modeling.default_model import ensure_default_model
from rlhf.jobs.service import Jobs
from rlhf.jobs.training_data import DataError
from rlhf.modeling.sampling import MAX_K, SamplingParams
from rlhf.preference.messages import as_messages
from rlhf.preference.pairs import only_full_ties
from storage import prompts as prompt_rows

SAFETY = "safety"


@dataclass(frozen=True)
class BenchRule:
    spec: str  # the annotator (rlhf.simulate.spec)
    scope: str  # "general" (prompts outside the safety category) or "safety"
    kind: str


# Each tuned on the base model's held-out answers at 64 new tokens to land between 15% and
# 60% (`--base-rates`, README).
RULES: dict[str, BenchRule] = {
    "length": BenchRule("atmost:250", "general", "length"),
    # `polite` (thanks, apologies, kind wishes) was 3.75%: this model hardly uses them
    "tone": BenchRule("mentions:you,your", "general", "tone: speaks to the reader"),
    "format": BenchRule("markdown", "general", "formatting"),
    "topic": BenchRule("mentions:python,code,function,programming", "general", "topic: programming"),
    "refusal": BenchRule("refuses", SAFETY, "refusing unsafe requests"),
}
METHODS = ("dpo", "kto", "grpo")
ONLINE = ("ppo", "grpo", "rloo")
SIZES = (60, 200)
TRAIN_PREFIX, HELD_OUT_SET = "learn-train-", "learn-held-out"
NO_PAIRS = "no usable pairs"


@dataclass(frozen=True)
class LearnConfig:
    rules: tuple[str, ...] = tuple(RULES)
    methods: tuple[str, ...] = METHODS
    sizes: tuple[int, ...] = SIZES
    k: int = 4
    held_out: int = 40  # general held-out prompts; safety: a third of the category
    answers: int = 80  # held-out answers per rule and version
    max_new_tokens: int = 64
    seed: int = 0

    def key(self) -> dict:
        """The settings a measurement depends on: a stored one is reused only when they match."""
        return {"held_out": self.held_out, "answers": self.answers, "max_new_tokens": self.max_new_tokens,
                "seed": self.seed, "k": self.k}


def check(config: LearnConfig) -> None:
    unknown = [rule for rule in config.rules if rule not in RULES]
    if unknown:
        raise WorkbenchError(f"Unknown rule {', '.join(unknown)}: the rules are {', '.join(RULES)}.")
    methods = [method for method in config.methods if method not in ("dpo", "kto") + ONLINE]
    if methods:
        raise WorkbenchError(f"The benchmark trains with dpo, kto, {', '.join(ONLINE)}, not {', '.join(methods)}.")
    if not all(size >= 2 for size in config.sizes):
        raise WorkbenchError(f"Each size is at least 2 comparisons, not {min(config.sizes)}.")
    if not 1 <= config.held_out <= 100 or config.answers < 1 or config.max_new_tokens < 1:
        raise WorkbenchError("--held-out is 1 to 100 prompts, --answers and --max-new-tokens at least 1.")


def split_prompts(rows: list[dict], held_out: int, seed: int) -> dict[str, tuple[list, list]]:
    """The default prompts as {scope: (training prompts, held-out prompts)}, each a list of
    prompt texts: a seeded shuffle within each scope, `held_out` of the general prompts and
    a third of the safety ones (rounded up) held out."""
    rng = random.Random(seed)
    scopes = {}
    for scope in ("general", SAFETY):
        texts = [row["prompt"] for row in rows if (row.get("category") == SAFETY) == (scope == SAFETY)]
        rng.shuffle(texts)
        n = math.ceil(len(texts) / 3) if scope == SAFETY else held_out
        if n >= len(texts):
            raise WorkbenchError(f"Only {len(texts)} {scope} prompts: hold out fewer than {n}.")
        scopes[scope] = (texts[n:], texts[:n])
    return scopes


def share(texts: list[str], holds: Callable[[str], bool]) -> dict:
    """How many of `texts` satisfy the rule, with the share's 95% Wilson interval."""
    n, hits = len(texts), sum(bool(holds(text)) for text in texts)
    low, high = wilson_interval(hits / n, n)
    return {"n": n, "hits": hits, "share": hits / n, "low": low, "high": high}


def sample_answers(model_dir: Path, prompts: list[str], answers: int, config: LearnConfig) -> list[str]:
    """About `answers` answers spread evenly over `prompts` (the same number each, rounded
    up), sampled with the default sampling, `config.max_new_tokens` and seed."""
    from rlhf.modeling.generate import sample
    from rlhf.modeling.models import load_policy

    per_prompt = math.ceil(answers / len(prompts))
    passes = math.ceil(per_prompt / MAX_K)
    conversations = [as_messages(text) for text in prompts] * passes
    params = SamplingParams(max_new_tokens=config.max_new_tokens, seed=config.seed)
    drawn = sample(load_policy(model_dir), conversations, k=math.ceil(per_prompt / passes), params=params)
    return [s.text for samples in drawn for s in samples]


class Results:
    """`results.jsonl` (one line per finished cell) and `answers.jsonl` (the base's held-out
    answers) in the output folder."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.cells_path, self.answers_path = out / "results.jsonl", out / "answers.jsonl"

    @staticmethod
    def _lines(path: Path) -> list[dict]:
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    @staticmethod
    def _append(path: Path, row: dict) -> None:
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def cell(self, rule: str, method: str, size: int, config: LearnConfig) -> dict | None:
        for row in self._lines(self.cells_path):
            if (row["rule"], row["method"], row["size"], row["spec"], row["settings"]) == (
                    rule, method, size, RULES[rule].spec, config.key()):
                return row
        return None

    def add_cell(self, row: dict) -> None:
        self._append(self.cells_path, row)

    def base_answers(self, scope: str, config: LearnConfig, make: Callable[[], list[str]]) -> list[str]:
        for row in self._lines(self.answers_path):
            if (row["scope"], row["settings"]) == (scope, config.key()):
                return row["texts"]
        texts = make()
        self._append(self.answers_path, {"scope": scope, "settings": config.key(), "texts": texts})
        return texts


def _base_model(out: Path) -> Path:
    """The default model converted once for the whole benchmark, under `out`."""
    return ensure_default_model(Home.resolve(out / "base-home"))


def _fresh_home(out: Path, root: Path, template: Path | None = None) -> Home:
    """A home at `root` whose base model is the benchmark's shared one, linked (no second
    conversion, no second copy on disk); a half-done earlier try is removed. With
    `template`, the home starts as a copy of that home's files (its database copied, its
    base model linked)."""
    if root.exists():
        shutil.rmtree(root)
    home = Home.resolve(root)
    if template is not None:
        models = Home.resolve(template).models_dir
        shutil.copytree(template, root, ignore=lambda folder, names: [BASE_VERSION] if Path(folder) == models else [])
    home.prepare()
    home.link_base_model(_base_model(out))
    return home


def shared_comparisons(scope: str, size: int, train_prompts: list[str], config: LearnConfig, out: Path,
                       on_step: Callable[[str], None] = print) -> tuple[Path, list[int], tuple[str, ...]]:
    """The base's unranked comparisons for `size` training prompts of `scope`, made once and
    shared by every cell of that scope and size: the same prompts, sampling and seeds give
    every rule and method the same comparisons (only their ranking differs), and sampling
    them is most of a cell's time. Returns the home that holds them (copied by each cell),
    their ids and the prompt sets they came from; a home left half-made is made again."""
    root = out / "comparisons" / f"{scope}-{size}"
    made_path = root / "made.json"
    if made_path.is_file():
        made = json.loads(made_path.read_text(encoding="utf-8"))
        if made["settings"] == config.key():
            return root / "home", made["comparisons"], tuple(made["sets"])
    if root.exists():
        shutil.rmtree(root)
    home = _fresh_home(out, root / "home")
    with Workbench(home) as wb:
        wb.init()
        passes = math.ceil(size / len(train_prompts))
        sets = tuple(f"{TRAIN_PREFIX}{number}" for number in range(1, passes + 1))
        with wb.store.transaction() as tx:
            for name in sets:
                prompt_rows.add_prompts(tx, name, [as_messages(text) for text in train_prompts], source="bench")
        made = []
        for number, name in enumerate(sets):
            on_step(f"{scope}/{size}: generating comparisons from {name}")
            params = SamplingParams(max_new_tokens=config.max_new_tokens, seed=config.seed + 1 + number)
            made += wb.generate(name, n=min(size - len(made), len(train_prompts)), k=config.k, params=params)
    made_path.write_text(json.dumps({"settings": config.key(), "comparisons": made, "sets": sets}), encoding="utf-8")
    return root / "home", made, sets


def base_rates(config: LearnConfig, out: Path, on_step: Callable[[str], None] = print) -> list[dict]:
    """Each rule's share among the base model's held-out answers."""
    from rlhf.simulate.spec import parse_annotator

    check(config)
    results, scopes = Results(out), split_prompts(default_prompts(), config.held_out, config.seed)
    rows = []
    for rule in config.rules:
        scope = RULES[rule].scope
        texts = results.base_answers(scope, config, lambda: (
            on_step(f"sampling the base on {len(scopes[scope][1])} held-out {scope} prompts"),
            sample_answers(_base_model(out), scopes[scope][1], config.answers, config))[1])
        rows.append({"rule": rule, "kind": RULES[rule].kind, "spec": RULES[rule].spec, "scope": scope,
                     **share(texts, parse_annotator(RULES[rule].spec).holds)})
    return rows


def run_cell(rule: str, method: str, size: int, config: LearnConfig, out: Path,
             on_step: Callable[[str], None] = print) -> dict:
    """One cell on a fresh home (see the module docstring); its row of results."""
    from rlhf.simulate.spec import parse_annotator

    started = time.monotonic()
    bench_rule = RULES[rule]
    annotator = parse_annotator(bench_rule.spec)
    train_prompts, held_prompts = split_prompts(default_prompts(), config.held_out, config.seed)[bench_rule.scope]
    template, made, sets = shared_comparisons(bench_rule.scope, size, train_prompts, config, out, on_step)
    home = _fresh_home(out, out / "homes" / f"{rule}-{method}-{size}", template)
    with Workbench(home) as wb:
        rank_all(wb, made, annotator)
        if only_full_ties(wb.rankings()):  # the cell's own home: these are its rankings
            raise DataError(f"{NO_PAIRS}: the rule tied all K completions in each of the {len(made)} rankings.")
        jobs = Jobs(home, wb.store)
        reward = None
        if method in ONLINE:
            on_step(f"{rule}/{method}/{size}: training the reward model")
            reward = train(jobs, "reward", {}, base=BASE_VERSION, prompt_sets=sets)["version"]
        on_step(f"{rule}/{method}/{size}: training {method} on {len(made)} rankings")
        job = train(jobs, method, {}, base=BASE_VERSION, reward=reward, prompt_sets=sets)
        version_dir = wb.model_version(job["version"]).path
        decided = decided_schedule(jobs, job["job_id"])
    results = Results(out)
    before = results.base_answers(bench_rule.scope, config, lambda: sample_answers(
        _base_model(out), held_prompts, config.answers, config))
    on_step(f"{rule}/{method}/{size}: sampling {job['version']} on {len(held_prompts)} held-out prompts")
    after = sample_answers(version_dir, held_prompts, config.answers, config)
    metrics = job["metrics"]
    return {"rule": rule, "method": method, "size": size, "spec": bench_rule.spec, "settings": config.key(),
            "comparisons": len(made), "before": share(before, annotator.holds),
            "after": share(after, annotator.holds), "version": job["version"],
            "kl": metrics.get("guard/kl"), "repetition": metrics.get("guard/repetition"),
            "heldout_accuracy": metrics.get("guard/heldout_accuracy"),
            "verdict": metrics.get("guard/verdict"), "schedule": decided,
            "minutes": round((time.monotonic() - started) / 60, 1), "home": str(home.root)}


def run_learn(config: LearnConfig, out: Path, on_step: Callable[[str], None] = print) -> list[dict]:
    """Every cell of the grid, finished ones read back from `results.jsonl`."""
    check(config)
    results, rows = Results(out), []
    # sizes first: a whole size's cells share its comparisons, and the small cells finish soonest
    for size in config.sizes:
        for method in config.methods:
            for rule in config.rules:
                row = results.cell(rule, method, size, config)
                if row is None:
                    try:
                        row = run_cell(rule, method, size, config, out, on_step)
                    except DataError as error:  # the cell's rankings give its method nothing to learn
                        row = unusable_cell(rule, method, size, config, str(error))
                        on_step(f"{rule}/{method}/{size}: recorded without training: {error}")
                    results.add_cell(row)
                else:
                    on_step(f"{rule}/{method}/{size}: done before, read from {results.cells_path}")
                rows.append(row)
    return rows


def unusable_cell(rule: str, method: str, size: int, config: LearnConfig, reason: str) -> dict:
    """The row of a cell whose rankings the method cannot learn from (every one a full tie,
    say): kept in results.jsonl like a measured one, so a rerun does not try it again."""
    return {"rule": rule, "method": method, "size": size, "spec": RULES[rule].spec, "settings": config.key(),
            "skipped": reason}


def _interval(figures: dict) -> str:
    return f"{figures['share']:.2f} [{figures['low']:.2f}, {figures['high']:.2f}]"


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def markdown_base_rates(rows: list[dict]) -> str:
    lines = ["| rule | kind | annotator | prompts | satisfied | share [95% CI] |", "| --- | --- | --- | --- | ---: | --- |"]
    lines += [f"| {r['rule']} | {r['kind']} | `{r['spec']}` | {r['scope']} | {r['hits']}/{r['n']} | {_interval(r)} |"
              for r in rows]
    return "\n".join(lines)


def markdown_cells(rows: list[dict]) -> str:
    lines = ["| rule | method | comparisons | before [95% CI] | after [95% CI] | change (points) | KL | repetition"
             " | held-out acc. | min |", "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['rule']} | {r['method']} | {r['size']} | {r['skipped']} | | | | | | |")
            continue
        change = 100 * (r["after"]["share"] - r["before"]["share"])
        lines.append(f"| {r['rule']} | {r['method']} | {r['comparisons']} | {_interval(r['before'])} |"
                     f" {_interval(r['after'])} | {change:+.1f} | {_figure(r['kl'])} | {_figure(r['repetition'])} |"
                     f" {_figure(r['heldout_accuracy'])} | {r['minutes']} |")
    return "\n".join(lines)


def config_from(args) -> LearnConfig:
    """The configuration from `python -m rlhf.bench learn`'s arguments."""
    def names(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    try:
        sizes = tuple(int(size) for size in names(args.sizes))
    except ValueError:
        raise WorkbenchError(f"--sizes is a comma-separated list of whole numbers, not '{args.sizes}'.") from None
    return LearnConfig(rules=names(args.rules), methods=names(args.methods), sizes=sizes, held_out=args.held_out,
                       answers=args.answers, max_new_tokens=args.max_new_tokens, seed=args.seed)


def add_arguments(parser) -> None:
    defaults = LearnConfig()
    parser.add_argument("--base-rates", action="store_true",
                        help="only each rule's share among the base model's held-out answers")
    parser.add_argument("--rules", default=",".join(defaults.rules), help=f"comma-separated, of {', '.join(RULES)}")
    parser.add_argument("--methods", default=",".join(defaults.methods), help="comma-separated: dpo, kto, grpo, ppo")
    parser.add_argument("--sizes", default=",".join(map(str, defaults.sizes)), help="comparisons of K=4 per cell")
    parser.add_argument("--held-out", type=int, default=defaults.held_out,
                        help="held-out prompts outside the safety category (a third of the safety ones besides)")
    parser.add_argument("--answers", type=int, default=defaults.answers, help="held-out answers per rule and version")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the sampling here (on 2 shared cores 1 is fastest: two OpenMP"
                        " threads wait on each other); the jobs' workers choose their own")
    parser.add_argument("--out", default="bench-learn", help="results folder (results.jsonl, answers.jsonl, homes/)")
    parser.add_argument("--json", action="store_true")


def main(args) -> int:
    """`python -m rlhf.bench learn`: prints a Markdown table (or JSON)."""
    config, out = config_from(args), Path(args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def step(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)
    try:
        if args.base_rates:
            rows = base_rates(config, out, step)
            print(json.dumps(rows, indent=2) if args.json else markdown_base_rates(rows))
            return 0
        rows = run_learn(config, out, step)
    except UserError as error:
        print(f"rlhf.bench learn: {error}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else markdown_cells(rows))
    return 0
