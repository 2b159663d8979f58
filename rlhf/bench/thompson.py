"""Does double Thompson sampling ask better questions than random? `python -m rlhf.bench thompson`.

The experiment of Dwaracherla et al. (2024, "Efficient Exploration for LLMs"), small: the
default model samples M candidates for each of the shipped prompts once (cached in
`--cache`); a simulated annotator (`--annotator`, a spec of `rlhf.simulate.spec`) ranks the
K of them that each strategy shows, one prompt per ranking, the prompts in a seeded order;

- random: K of the M at random (passive exploration);
- thompson: K picked by double Thompson sampling (`rlhf.preference.thompson`) over a
  bootstrap ensemble of reward heads (`rlhf.train.head_ensemble`) refitted every `--batch`
  rankings on all rankings so far; random until `min_rankings` rankings exist, as the
  queue does.

At each budget (`--budgets`, rankings) one reward head (`rlhf.train.reward_head.fit_head`,
its defaults, Bradley-Terry) is fitted on that strategy's rankings so far and measured on
held-out prompts no ranking uses: all M candidates of each, every pair the annotator's
rule without its noise orders strictly; accuracy is the share of those pairs the head
orders the same way. The seeds (`--seeds`) are shared by both strategies: the same
prompt order, the same annotator noise stream. Features are the frozen base's, computed
once (the reward head's cache). Prints a table, writes a PNG (`--plot`), never asserts.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlhf.home import default_prompts
from rlhf.preference.thompson import double_thompson, random_slots
from rlhf.train.head_ensemble import EnsembleConfig, Featurizer, fit_ensemble, member_scores
from rlhf.train.reward_head import HeadConfig, PairTable, fit_head
from rlhf.train.reward_losses import ranked_pairs

log = logging.getLogger(__name__)

STRATEGIES = ("random", "thompson")


@dataclass
class ThompsonBench:
    annotator: str = "longer"
    budgets: tuple[int, ...] = (20, 40, 80, 160)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    m: int = 8                  # candidates per prompt
    k: int = 4                  # shown per ranking
    max_new_tokens: int = 32
    temperature: float = 1.0    # diverse candidates: the point of choosing among them
    batch: int = 20             # rankings between two refits of the ensemble
    prompts: int = 183          # the first N shipped prompts
    held_out: int = 23          # of them, never ranked: the accuracy is measured on all their candidates' pairs
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


def candidates(model_dir: Path, prompts: list[list[dict]], bench: ThompsonBench, cache: Path) -> list[list[str]]:
    """M sampled texts per prompt, sampled 8 prompts at a time and saved after each batch in
    `cache/candidates.json` (a stopped run resumes where it was; settings changed: afresh)."""
    from rlhf.modeling.generate import sample
    from rlhf.modeling.models import load_policy
    from rlhf.modeling.sampling import SamplingParams

    key = {"model": str(Path(model_dir).resolve()), "m": bench.m, "max_new_tokens": bench.max_new_tokens,
           "temperature": bench.temperature}
    stored = cache / "candidates.json"
    texts: list[list[str]] = []
    if stored.is_file():
        saved = json.loads(stored.read_text())
        texts = saved["texts"] if saved["key"] == key else []
    if len(texts) >= len(prompts):
        return texts[:len(prompts)]
    policy = load_policy(model_dir)
    cache.mkdir(parents=True, exist_ok=True)
    for start in range(len(texts), len(prompts), 8):
        params = SamplingParams(temperature=bench.temperature, top_p=1.0, max_new_tokens=bench.max_new_tokens,
                                seed=start)
        texts += [[s.text for s in row] for row in sample(policy, prompts[start:start + 8], k=bench.m, params=params)]
        stored.write_text(json.dumps({"key": key, "texts": texts}))
        log.warning("sampled candidates for %d of %d prompts", len(texts), len(prompts))
    return texts


def as_pairs(pairs: list[tuple[int, int]]) -> PairTable:
    first, second = zip(*pairs)
    return PairTable(torch.tensor(first), torch.tensor(second), torch.ones(len(pairs)),
                     torch.zeros(len(pairs), dtype=torch.bool))


def ranked_into(annotator, prompt, texts: list[str], rows: list[int]) -> list[tuple[int, int]]:
    """The strict (better, worse) pairs of the annotator's ranking of `texts`, as feature rows."""
    ranks = annotator.ranking(prompt, texts).rank_list()
    return [(rows[i], rows[j]) for i, j, _, tied in ranked_pairs(ranks, keep_ties=False) if not tied]


def held_out_accuracy(weight: torch.Tensor, features: np.ndarray, truth: PairTable) -> float:
    rewards = torch.as_tensor(features) @ weight
    return float((rewards[truth.first] > rewards[truth.second]).float().mean())


def run_strategy(strategy: str, seed: int, order: list[int], prompts, texts, features: np.ndarray,
                 annotator, truth: PairTable, bench: ThompsonBench) -> dict[int, float]:
    """{budget: held-out accuracy} for one strategy and seed. features: [prompts * M, hidden],
    row p * M + m is candidate m of prompt p."""
    rng = np.random.default_rng(seed)
    noisy = annotator.with_noise(seed=seed)
    pairs: list[tuple[int, int]] = []
    weights = None
    accuracy: dict[int, float] = {}
    for done in range(max(bench.budgets)):
        p = order[done % len(order)]  # a pool smaller than the budget is visited again, in the same order
        if strategy == "thompson" and done % bench.batch == 0 and done >= bench.ensemble.min_rankings and pairs:
            weights = fit_ensemble(features, as_pairs(pairs), bench.ensemble.members, bench.ensemble.head,
                                   seed=seed * 1000 + done)
        rows = [p * bench.m + j for j in range(bench.m)]
        if weights is None:
            shown = random_slots(bench.m, bench.k, rng)
        else:
            shown = double_thompson(member_scores(weights, features[rows]), bench.k, rng)
        pairs += ranked_into(noisy, prompts[p], [texts[p][j] for j in shown], [rows[j] for j in shown])
        if done + 1 in bench.budgets:
            head = fit_head(features, as_pairs(pairs), "bradley_terry", HeadConfig(seed=seed))
            accuracy[done + 1] = held_out_accuracy(head.weight, features, truth)
    return accuracy


def bench_thompson(model_dir: Path, cache: Path, bench: ThompsonBench) -> dict:
    from rlhf.simulate.spec import parse_annotator

    annotator = parse_annotator(bench.annotator)
    started = time.perf_counter()
    prompts = [[{"role": "user", "content": row["prompt"]}] for row in default_prompts()][:bench.prompts]
    texts = candidates(model_dir, prompts, bench, cache)
    sampled = time.perf_counter() - started
    featurizer = Featurizer(model_dir, cache / "features", bench.ensemble.pooling)
    features = featurizer.features([ids for prompt, row in zip(prompts, texts) for ids in featurizer.encode(prompt, row)])
    embedded = time.perf_counter() - started - sampled

    shuffled = list(np.random.default_rng(12345).permutation(len(prompts)))
    pool, held_out = shuffled[:len(prompts) - bench.held_out], shuffled[len(prompts) - bench.held_out:]
    clean = annotator.with_noise(flip_prob=0.0, tie_prob=0.0)
    truth = as_pairs([pair for p in held_out
                      for pair in ranked_into(clean, prompts[p], texts[p], [p * bench.m + j for j in range(bench.m)])])
    runs = {strategy: {} for strategy in STRATEGIES}
    for seed in bench.seeds:
        order = [int(pool[i]) for i in np.random.default_rng(seed).permutation(len(pool))]
        for strategy in STRATEGIES:
            runs[strategy][seed] = run_strategy(strategy, seed, order, prompts, texts, features, annotator, truth,
                                                bench)
            log.info("%s seed %d: %s", strategy, seed, runs[strategy][seed])
    table = []
    for budget in bench.budgets:
        row = {"rankings": budget}
        for strategy in STRATEGIES:
            values = [runs[strategy][seed][budget] for seed in bench.seeds]
            row[strategy] = statistics.mean(values)
            row[f"{strategy}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["thompson_wins"] = sum(runs["thompson"][s][budget] > runs["random"][s][budget] for s in bench.seeds)
        table.append(row)
    return {"settings": asdict(bench), "prompts": len(prompts), "held_out_prompts": len(held_out),
            "held_out_pairs": len(truth), "sample_seconds": round(sampled, 1), "embed_seconds": round(embedded, 1),
            "total_seconds": round(time.perf_counter() - started, 1), "table": table,
            "runs": {s: {str(seed): values for seed, values in r.items()} for s, r in runs.items()}}


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"annotator '{s['annotator']}', M={s['m']} candidates of {s['max_new_tokens']} tokens, K={s['k']} shown;"
          f" {result['held_out_pairs']} held-out pairs on {result['held_out_prompts']} prompts;"
          f" seeds {', '.join(map(str, s['seeds']))}; {result['total_seconds']} s"
          f" (sampling {result['sample_seconds']} s, embedding {result['embed_seconds']} s)")
    print(f"{'rankings':>8} | {'random':>13} | {'thompson':>13} | thompson better")
    for row in result["table"]:
        print(f"{row['rankings']:>8} | {row['random']:.3f} ± {row['random_sd']:.3f} | {row['thompson']:.3f} ± "
              f"{row['thompson_sd']:.3f} | {row['thompson_wins']} of {len(s['seeds'])} seeds")


def plot(result: dict, path: str) -> None:
    """Held-out accuracy against rankings, mean over seeds with one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    s = result["settings"]
    budgets = [row["rankings"] for row in result["table"]]
    figure, axes = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    for strategy, colour in zip(STRATEGIES, ("grey", "#d9480f")):
        means = [row[strategy] for row in result["table"]]
        axes.errorbar(budgets, means, yerr=[row[f"{strategy}_sd"] for row in result["table"]], marker="o",
                      capsize=4, color=colour, label=strategy)
    axes.set(xscale="log", xticks=budgets, xticklabels=[str(b) for b in budgets], xlabel="rankings",
             ylabel="held-out pairwise accuracy",
             title=f"'{s['annotator']}': K={s['k']} of M={s['m']}, {len(s['seeds'])} seeds")
    axes.legend(loc="lower right")
    figure.savefig(path, dpi=110)
    plt.close(figure)
