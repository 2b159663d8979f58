"""Training benchmark: `python -m rlhf.bench train [--methods reward,dpo,...] [--pairs 200]`.

For each method, one standard small job on the default model, run as the workbench runs
it (snapshot, worker subprocess, registration) in a throw-away home: seconds per step,
examples per second, the worker's peak memory, and the job's total time. The offline
methods train one epoch on synthetic rankings that give `--pairs` preference pairs
(K=3, every pair); the online ones (ppo, grpo, rloo) run a fixed number of steps.
Prints figures, never asserts: compare them as ratios taken in one run.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhf.home import BASE_VERSION, Home
from rlhf.modeling.default_model import ensure_default_model
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.runner import JobRunner
from rlhf.jobs.files import read_status, read_log
from rlhf.collect.workbench import Workbench
from storage import comparisons, prompts
from storage.comparisons import NewCompletion

OFFLINE = {
    "reward": {"num_train_epochs": 1},
    "sft": {"num_train_epochs": 1},
    "dpo": {"num_train_epochs": 1, "pairs": "all"},
    "kto": {"num_train_epochs": 1},
}
ONLINE_STEPS = 5
ONLINE = {"ppo": {"max_steps": ONLINE_STEPS}, "grpo": {"max_steps": ONLINE_STEPS}, "rloo": {"max_steps": ONLINE_STEPS}}
FILLERS = ["Sure.", "Here is a short answer.", "Let me explain step by step, with an example and a summary at the end.",
           "In short: it depends on the details, but the usual advice is to start small and measure."]


def synthetic_rankings(wb: Workbench, n_comparisons: int, seed: int = 0) -> None:
    """K=3 comparisons on the default prompts, ranked longest first (3 pairs each)."""
    rng = random.Random(seed)
    with wb.store.transaction() as cur:
        prompt_ids = prompts.in_sets(cur, None)["id"].tolist()
        ids = []
        for i in range(n_comparisons):
            texts = rng.sample(FILLERS, 3)
            ids.append((comparisons.add(cur, prompt_ids[i % len(prompt_ids)],
                                        [NewCompletion(t, BASE_VERSION) for t in texts]), texts))
    for comparison_id, texts in ids:
        order = sorted(range(3), key=lambda j: -len(texts[j]))
        wb.rank(comparison_id, " > ".join("ABC"[j] for j in order), "bench")


def decided_schedule(jobs: Jobs, job_id: int) -> str | None:
    """What the job's schedule decided and why (its log's `Schedule: ...` line, without the label)."""
    lines = [line.split("Schedule: ", 1)[1] for line in read_log(jobs.job_dir(job_id)).splitlines()
             if "Schedule: " in line]
    return lines[0] if lines else None


def run_method(wb: Workbench, method: str, settings: dict, reward: str | None) -> dict:
    jobs = Jobs(wb.home, wb.store)
    started = time.perf_counter()
    job_id = jobs.submit(JobRequest(method, reward=reward, settings=settings))
    job = JobRunner(jobs).run(job_id)
    total = time.perf_counter() - started
    status = read_status(jobs.job_dir(job_id))
    row = {"method": method, "job_id": job_id, "status": job["status"], "rows": job["spec"]["rows"], "steps": status.get("total"),
           "total_seconds": round(total, 1), "train_seconds": status.get("seconds"),
           "peak_rss_mib": status.get("peak_rss_mib"), "version": job["output_version"], "error": job["error"]}
    metrics = status.get("metrics") or {}
    if "eval/accuracy" in metrics:   # a reward model's held-out pairwise accuracy
        row["eval_accuracy"], row["eval_pairs"] = metrics["eval/accuracy"], metrics.get("eval/pairs")
    if "eval/rewards/margins" in metrics:   # a DPO policy's held-out implicit reward margin and accuracy
        row["eval_margin"], row["eval_reward_accuracy"] = metrics["eval/rewards/margins"], metrics.get(
            "eval/rewards/accuracies")
        row["eval_pairs"] = metrics.get("eval/examples")
    runtime = metrics.get("train/runtime_s") or status.get("seconds")   # the training loop alone
    if job["status"] == "succeeded" and runtime and row["steps"]:
        row["seconds_per_step"] = round(runtime / row["steps"], 2)
        examples = row["rows"] if method in OFFLINE else None
        row["examples_per_second"] = round(examples / runtime, 2) if examples else None
    return row


def plain_trl_row(job_dir: Path) -> dict:
    """`rlhf.bench.plain_trl` on a finished DPO job's rows and settings, in its own process."""
    done = subprocess.run([sys.executable, "-m", "rlhf.bench.plain_trl", str(job_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"method": "dpo (plain TRL)", "status": "failed", "error": done.stderr.strip().splitlines()[-1:]}
    return {"status": "succeeded", **json.loads(done.stdout.strip().splitlines()[-1])}


def bench_train(methods: list[str], pairs: int, home_dir: str | None, keep: bool, reference: bool = False) -> list[dict]:
    root = Path(home_dir) if home_dir else Path(tempfile.mkdtemp(prefix="rlhf-bench-train-"))
    home = Home(root)
    ensure_default_model(home)
    rows = []
    try:
        with Workbench(home) as wb:
            wb.init()
            synthetic_rankings(wb, max(1, pairs // 3))
            reward = None
            for method in methods:
                settings = {**OFFLINE, **ONLINE}[method]
                row = run_method(wb, method, settings, reward if method in ONLINE else None)
                if method == "reward" and row["status"] == "succeeded":
                    reward = row["version"]
                rows.append(row)
                print(json.dumps(row), flush=True)
                if reference and method == "dpo" and row["status"] == "succeeded":
                    plain = plain_trl_row(Jobs(wb.home, wb.store).job_dir(row["job_id"]))
                    if plain.get("seconds_per_step") and row.get("seconds_per_step"):
                        plain["workbench_over_plain"] = round(row["seconds_per_step"] / plain["seconds_per_step"], 2)
                    rows.append(plain)
                    print(json.dumps(plain), flush=True)
    finally:
        if not keep and not home_dir:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<16} {'status':<10} {'rows':>5} {'steps':>6} {'s/step':>7} {'ex/s':>6} {'peak MiB':>9} {'total s':>8}")
    for row in rows:
        print(f"{row['method']:<16} {row['status']:<10} {row.get('rows') or '':>5} {row.get('steps') or '':>6} "
              f"{row.get('seconds_per_step') or '':>7} {row.get('examples_per_second') or '':>6} "
              f"{row.get('peak_rss_mib') or '':>9} {row.get('total_seconds') or '':>8}")
        if "workbench_over_plain" in row:
            print(f"{'':<17}the workbench's DPO step takes {row['workbench_over_plain']}x plain TRL's")
        if row.get("error"):
            print(f"{'':<17}{row['error']}")
