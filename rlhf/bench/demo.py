"""`rlhf demo`: the whole loop, headless, on a fresh home, with a simulated annotator.

Each round: generate comparisons from the active policy, rank them with the simulated
annotator (source 'simulated'), train a reward model from the base on every ranking so
far, train the next policy from the active one on this round's rankings (dpo, kto:
iterative, on-policy preference learning as in Llama 2's rounds and Xiong et al. 2024,
"Iterative Preference Learning from Human Feedback") or against the reward model (ppo),
promote it (the next round's comparisons come from it), and measure the new policy
against the base on held-out prompts, judged by the annotator's own rule without its
noise. Every step is the workbench's own: the
same generation, snapshot, worker subprocess and registration as `rlhf train`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from rlhf.home import BASE_VERSION, Home
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.runner import JobRunner
from rlhf.jobs.files import read_status
from rlhf.modeling.sampling import SamplingParams
from rlhf.collect.workbench import Workbench, WorkbenchError
from storage import prompts as prompt_rows

if TYPE_CHECKING:
    from rlhf.modeling.model_cache import ModelCache
    from rlhf.simulate.annotator import Annotator

log = logging.getLogger(__name__)

TRAIN_SET, HELD_OUT_SET = "demo-train", "demo-held-out"
DEMO_METHODS = ("dpo", "kto", "ppo")


@dataclass
class DemoConfig:
    rounds: int = 2
    annotator: str = "shorter@flip=0.1"
    method: str = "dpo"
    prompts_per_round: int = 40
    k: int = 4
    max_new_tokens: int = 48
    held_out: int = 32
    seed: int = 0
    # each completion scored once per ranking (InstructGPT): a third of the pairwise cost
    # one epoch: the budget the demo's figures were measured with (the schedule would pick 4)
    reward_settings: dict = field(default_factory=lambda: {
        "grouping": "ranking", "per_device_train_batch_size": 4, "num_train_epochs": 1})
    policy_settings: dict = field(default_factory=lambda: {
        # every ranking trains (no held-out split): the demo judges on its own held-out prompts
        "dpo": {"pairs": "best_vs_worst", "num_train_epochs": 2, "learning_rate": 3e-4, "eval_fraction": 0},
        "kto": {"num_train_epochs": 2, "learning_rate": 3e-4, "eval_fraction": 0},
        "ppo": {"max_steps": 8},
    })


def check(config: DemoConfig) -> "Annotator":
    from rlhf.simulate.spec import parse_annotator  # scipy: only when the demo runs

    if config.method not in DEMO_METHODS:
        raise WorkbenchError(f"The demo trains with {', '.join(DEMO_METHODS)}, not '{config.method}'.")
    if config.rounds < 1:
        raise WorkbenchError(f"The demo needs at least one round, not {config.rounds}.")
    return parse_annotator(config.annotator)


def prepare_home(wb: Workbench, held_out: int) -> None:
    """A fresh home: init, then the default prompts split into a training set and a
    held-out set that no comparison ever uses."""
    if wb.rankings().shape[0] or wb.models().shape[0] > 1:
        raise WorkbenchError(f"The demo runs on a fresh home, and {wb.home.root} already has rankings or"
                             " trained versions: pass --home with a new directory.")
    wb.init()
    cur = wb.store.cursor()
    conversations = list(prompt_rows.in_sets(cur, ["default"])["messages"])
    with wb.store.transaction() as tx:
        prompt_rows.add_prompts(tx, HELD_OUT_SET, conversations[-held_out:], source="demo")
        prompt_rows.add_prompts(tx, TRAIN_SET, conversations[:-held_out], source="demo")


def rank_all(wb: Workbench, comparison_ids: list[int], annotator: "Annotator") -> None:
    """Rank each comparison with the simulated annotator, stored as its rankings (source 'simulated')."""
    for comparison_id in comparison_ids:
        shown = wb.comparison(comparison_id)
        texts = [c["text"] for c in shown.completions]
        wb.rank(comparison_id, annotator.rank(shown.messages, texts), annotator.name, source="simulated")


def train(jobs: Jobs, method: str, settings: dict, base: str | None = None, reward: str | None = None,
          rounds: list[int] | None = None, prompt_sets: tuple[str, ...] = (TRAIN_SET,)) -> dict:
    """Run one job in the foreground as `rlhf train` would; its output version and final metrics."""
    selection = {"prompt_sets": list(prompt_sets), "rounds": rounds or []}
    job_id = jobs.submit(JobRequest(method, base=base, reward=reward, settings=settings, selection=selection,
                                    created_by="demo"))
    job = JobRunner(jobs).run(job_id)
    if job["status"] != "succeeded":
        raise WorkbenchError(f"The demo's {method} job {job_id} {job['status']}: {job['error']}")
    return {"job_id": job_id, "version": job["output_version"],
            "metrics": read_status(jobs.job_dir(job_id)).get("metrics", {})}


def win_rate_against_base(wb: Workbench, version: str, judge: "Annotator", config: DemoConfig,
                          models: "ModelCache") -> dict:
    """One sample per held-out prompt from `version` and from the base, same settings and
    seed, judged pairwise by the annotator's rule (ties half); `models` keeps the base
    loaded from round to round."""
    from rlhf.modeling.generate import sample
    from rlhf.simulate.judge import judge_winrate

    conversations = list(prompt_rows.in_sets(wb.store.cursor(), [HELD_OUT_SET])["messages"])
    params = SamplingParams(temperature=0.7, max_new_tokens=config.max_new_tokens, seed=config.seed)
    texts = {}
    for name in (version, BASE_VERSION):
        policy = models.policy(wb.model_version(name).path)
        texts[name] = [samples[0].text for samples in sample(policy, conversations, k=1, params=params)]
    result = judge_winrate(judge, conversations, texts[version], texts[BASE_VERSION], seed=config.seed)
    result["mean_chars"] = sum(map(len, texts[version])) / len(conversations)
    result["base_mean_chars"] = sum(map(len, texts[BASE_VERSION])) / len(conversations)
    return result


def run_demo(home: Home, config: DemoConfig, on_round: Callable[[dict], None] = lambda row: None,
             on_step: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Run the loop; returns (and hands `on_round`) one row of figures per round, and
    tells `on_step` what it starts next, in a few words."""
    annotator = check(config)
    from rlhf.modeling.model_cache import ModelCache

    judge = annotator.with_noise(flip_prob=0.0, tie_prob=0.0)
    models = ModelCache()
    rows = []
    with Workbench(home) as wb:
        prepare_home(wb, config.held_out)
        jobs = Jobs(home, wb.store)
        for round_number in range(1, config.rounds + 1):
            params = SamplingParams(temperature=0.9, max_new_tokens=config.max_new_tokens,
                                    seed=config.seed + round_number)
            store_round = wb.current_round().number  # the demo's round r is the store's on a fresh home
            on_step(f"round {round_number}: generating {config.prompts_per_round} comparisons of K={config.k}"
                    f" from {wb.model_version(None).name}")
            made = wb.generate(TRAIN_SET, n=config.prompts_per_round, k=config.k, params=params)
            rank_all(wb, made, annotator)
            on_step(f"round {round_number}: training a reward model on {wb.rankings().shape[0]} rankings")
            reward = train(jobs, "reward", config.reward_settings, base=BASE_VERSION)
            on_step(f"round {round_number}: training the policy with {config.method} on this round's rankings")
            settings = config.policy_settings.get(config.method, {})
            policy = train(jobs, config.method, settings, reward=reward["version"] if config.method == "ppo" else None,
                           rounds=[store_round])
            wb.promote(policy["version"])
            on_step(f"round {round_number}: {policy['version']} against {BASE_VERSION} on {config.held_out}"
                    " held-out prompts")
            versus = win_rate_against_base(wb, policy["version"], judge, config, models)
            row = {"round": round_number, "comparisons": len(made), "rankings": int(wb.rankings().shape[0]),
                   "reward_version": reward["version"],
                   "reward_eval_accuracy": reward["metrics"].get("eval/accuracy"),
                   "policy_version": policy["version"], "win_rate_vs_base": versus["win_rate"],
                   "wins": versus["wins"], "ties": versus["ties"], "losses": versus["losses"],
                   "mean_chars": round(versus["mean_chars"], 1),
                   "base_mean_chars": round(versus["base_mean_chars"], 1)}
            rows.append(row)
            on_round(row)
    return rows


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion `rate` over `n` trials (E. B. Wilson,
    "Probable inference, the law of succession, and statistical inference", JASA 1927):
    unlike the normal approximation it stays inside [0, 1] near 0 and 1."""
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (rate * (1 - rate) / n + z * z / (4 * n * n)) ** 0.5
    return centre - half, centre + half


def plot_rounds(rows: list[dict], config: DemoConfig, path: str) -> None:
    """Win rate against the base by round (round 0 is the base itself, 0.5), with a 95%
    Wilson interval over the held-out prompts, and the mean answer length of the policy
    and the base: a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # not its font cache's news
    import matplotlib.pyplot as plt

    rounds = [0] + [row["round"] for row in rows]
    rates = [0.5] + [row["win_rate_vs_base"] for row in rows]
    n = config.held_out
    intervals = [(0.5, 0.5)] + [wilson_interval(rate, n) for rate in rates[1:]]
    errors = [[rate - low for rate, (low, _) in zip(rates, intervals)],
              [high - rate for rate, (_, high) in zip(rates, intervals)]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    left.errorbar(rounds, rates, yerr=errors, marker="o", capsize=4, color="#d9480f")
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="round", ylabel="win rate vs base", ylim=(0, 1), xticks=rounds,
             title=f"Judged by '{config.annotator.split('@')[0]}' on {n} held-out prompts")
    policy_chars = [rows[0]["base_mean_chars"]] + [row["mean_chars"] for row in rows]
    base_chars = [rows[0]["base_mean_chars"]] + [row["base_mean_chars"] for row in rows]
    right.plot(rounds, policy_chars, marker="o", color="#d9480f", label="policy of the round")
    right.plot(rounds, base_chars, marker="o", color="grey", label="base")
    right.legend(loc="lower left")
    right.set(xlabel="round", ylabel="mean answer length (characters)", xticks=rounds,
              ylim=(0, 1.2 * max(policy_chars + base_chars)),
              title=f"{config.method.upper()}, {config.prompts_per_round} comparisons of K={config.k} a round")
    figure.savefig(path, dpi=110)
    plt.close(figure)
