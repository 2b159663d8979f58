"""`rlhf train`, `rlhf jobs`, `rlhf score`, `rlhf eval-reward`, `rlhf promote`.

With no server running, `rlhf train` owns the store and runs the job in the foreground
with a progress bar (Ctrl-C cancels it cleanly). While `rlhf serve` holds the store, it
hands the job to the server's queue instead, and `rlhf jobs` reads the job directories.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from app.cli_tables import print_table
from app.job_views import guard_summary, perplexity_summary
from rlhf.home import Home
from rlhf.jobs.service import JobError, JobRequest, Jobs
from rlhf.jobs.runner import JobRunner
from rlhf.jobs.files import read_log, read_status
from rlhf.jobs.requests import send_request
from rlhf.train.methods import METHODS, SettingsError, parse_assignments
from rlhf.versions import wrong_kind
from rlhf.collect.workbench import Workbench

FINAL_METRICS = ("train_loss", "train/loss", "eval/perplexity", "train/reward_last", "eval/accuracy", "eval/tie_accuracy",
                 "eval/rewards/accuracies", "eval/rewards/margins", "reward/mean", "objective/kl", "reward_offset")


def job_request(args, created_by: str) -> JobRequest:
    """The request `rlhf train` makes: --config file, then --set, then the selection flags."""
    settings: dict = {}
    selection: dict = {}
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise SettingsError(f"Cannot read the config file {args.config}: {error}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{args.config} must hold a mapping of setting: value.")
        selection = dict(loaded.pop("selection", None) or {})
        settings.update(loaded)
    settings.update(parse_assignments(args.set or []))
    for key in ("prompt_sets", "categories", "annotators", "rounds"):
        if getattr(args, key):
            selection[key] = getattr(args, key)
    for key in ("since", "until", "min_agreement"):
        if getattr(args, key) is not None:
            selection[key] = getattr(args, key)
    # a path the server can read too (it may run from another directory)
    corpus = str(Path(args.corpus).expanduser().absolute()) if getattr(args, "corpus", None) else None
    return JobRequest(args.method, args.base, args.reward, settings, selection, created_by, corpus)


def _progress_bar(method: str):
    from tqdm import tqdm

    bar = tqdm(desc=method, unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(status: dict) -> None:
        if status.get("total") and bar.total != status["total"]:
            bar.total = status["total"]
        bar.n = status.get("step") or 0
        bar.set_postfix_str(status.get("state", ""), refresh=False)
        bar.refresh()

    return bar, update


def describe_outcome(job: dict) -> str:
    if job["status"] == "succeeded":
        metrics = read_status(Path(job["job_dir"])).get("metrics", {})
        shown = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items() if key in FINAL_METRICS)
        guarded, held_out = guard_summary(metrics), perplexity_summary(metrics)
        return (f"Job {job['id']} succeeded: registered {job['output_version']} ({job['spec']['kind']},"
                f" parent {job['spec']['base']})" + (f". {shown}" if shown else ".")
                + (f"\n{held_out[0].upper()}{held_out[1:]}." if held_out else "")
                + (f"\nGuardrails: {guarded}" if guarded else ""))
    return f"Job {job['id']} {job['status']}: {job['error']}"


def cmd_train(wb: Workbench, args) -> int:
    jobs = Jobs(wb.home, wb.store)
    jobs.recover()  # this process owns the store: a job left by one that crashed is ended first
    job_id = jobs.submit(job_request(args, "cli"))
    spec = jobs.get(job_id)["spec"]
    print(f"Job {job_id}: {spec['method']} from {spec['base']}"
          + (f" with reward model {spec['reward']}" if spec["reward"] else "")
          + f" on {spec['rows']} rows; log: {jobs.job_dir(job_id) / 'log.txt'}", file=sys.stderr)
    if args.queue:
        print(f"Queued as job {job_id}; `rlhf serve` or `rlhf jobs run` runs it.")
        return 0
    bar, update = _progress_bar(spec["method"])
    job = JobRunner(jobs).run(job_id, update)
    bar.close()
    job["job_dir"] = str(jobs.job_dir(job_id))
    if args.json:
        print(json.dumps({"job_id": job_id, "status": job["status"], "error": job["error"],
                          "version": job["output_version"],
                          "metrics": read_status(jobs.job_dir(job_id)).get("metrics", {})}))
    else:
        print(describe_outcome(job))
    return 0 if job["status"] == "succeeded" else 1


def train_via_server(home: Home, args, url: str) -> int:
    answer = send_request(home, {"action": "submit", **vars(job_request(args, "cli"))})
    if "error" in answer:
        raise JobError(answer["error"])
    job_id = answer["job_id"]
    if args.json:
        print(json.dumps({"job_id": job_id, "status": "queued", "server": url}))
    else:
        print(f"Queued as job {job_id} on the server at {url}. Follow it with `rlhf jobs log {job_id} --follow`.")
    return 0


def cmd_jobs_run(wb: Workbench, args) -> int:
    jobs = Jobs(wb.home, wb.store)
    jobs.recover()  # this process owns the store: a job left by one that crashed is ended first
    runner = JobRunner(jobs)
    ran = 0
    while runner.run_queued() is not None:
        ran += 1
    print(f"Ran {ran} queued job{'s' if ran != 1 else ''}.")
    return 0


def _jobs_table(frame: pd.DataFrame, as_json: bool) -> None:
    if not as_json and not frame.empty:
        frame = frame.assign(progress=[f"{s}/{t}" if t else str(s) for s, t in zip(frame["step"], frame["total_steps"])])
        frame = frame[["id", "method", "status", "progress", "base", "output_version", "created_at", "error"]]
    print_table(frame, as_json, "No jobs yet: `rlhf train METHOD` starts one.")


def cmd_jobs(wb: Workbench, args) -> int:
    _jobs_table(Jobs(wb.home, wb.store).list(args.limit), args.json)
    return 0


def jobs_from_files(home: Home, args, url: str) -> int:
    """What the job directories say, for when the server holds the store."""
    rows = []
    for job_dir in sorted(home.jobs_dir.iterdir(), key=lambda p: -int(p.name) if p.name.isdigit() else 0):
        if not job_dir.name.isdigit() or not (job_dir / "spec.json").is_file():
            continue
        spec = json.loads((job_dir / "spec.json").read_text())
        status = read_status(job_dir)
        rows.append({"id": int(job_dir.name), "method": spec["method"], "status": status.get("state", "queued"),
                     "step": status.get("step", 0), "total_steps": status.get("total"), "base": spec["base"],
                     "output_version": spec["output_version"] if status.get("state") == "succeeded" else None,
                     "created_at": None, "error": status.get("error")})
    print(f"(the server at {url} holds the store; read from {home.jobs_dir})", file=sys.stderr)
    _jobs_table(pd.DataFrame(rows[: args.limit] if args.limit else rows), args.json)
    return 0


def cmd_jobs_cancel(wb: Workbench, args) -> int:
    jobs = Jobs(wb.home, wb.store)
    jobs.recover()  # this process owns the store, so no runner watches a job left 'running'
    print(jobs.cancel(args.job_id))
    return 0


def cancel_via_server(home: Home, args, url: str) -> int:
    answer = send_request(home, {"action": "cancel", "job_id": args.job_id})
    if "error" in answer:
        raise JobError(answer["error"])
    print(answer["message"])
    return 0


def cmd_jobs_log(home: Home, args) -> int:
    """Reads the job's log file; never needs the store."""
    job_dir = home.jobs_dir / str(args.job_id)
    if not (job_dir / "spec.json").is_file():
        raise JobError(f"There is no job {args.job_id} in {home.jobs_dir}.")
    text = read_log(job_dir, args.tail)
    print(text or "(the log is empty: the job has not started)")
    if args.follow:
        seen = len(read_log(job_dir).splitlines())
        while read_status(job_dir).get("state") not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
            lines = read_log(job_dir).splitlines()
            for line in lines[seen:]:
                print(line, flush=True)
            seen = len(lines)
        print(f"(job {args.job_id} {read_status(job_dir)['state']})")
    return 0


def cmd_jobs_show(home: Home, args) -> int:
    """A job's state and, once it has ended, its final metrics and guardrails (held-out
    accuracy, KL, repetition and the sentence when it moved too little or too far); read
    from the job's directory, so it never needs the store."""
    job_dir = home.jobs_dir / str(args.job_id)
    if not (job_dir / "spec.json").is_file():
        raise JobError(f"There is no job {args.job_id} in {home.jobs_dir}.")
    spec, status = json.loads((job_dir / "spec.json").read_text()), read_status(job_dir)
    metrics = status.get("metrics") or {}
    if args.json:
        print(json.dumps({"job_id": args.job_id, "method": spec["method"], "base": spec["base"],
                          "status": status.get("state", "queued"), "error": status.get("error"),
                          "metrics": metrics}))
        return 0
    print(f"Job {args.job_id}: {spec['method']} from {spec['base']} on {spec['rows']} rows · "
          + status.get("state", "queued") + (f" · {status['error']}" if status.get("error") else ""))
    shown = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items() if key in FINAL_METRICS)
    if shown:
        print(f"Final metrics: {shown}")
    held_out = perplexity_summary(metrics)
    if held_out:
        print(f"{held_out[0].upper()}{held_out[1:]}.")
    guarded = guard_summary(metrics)
    if guarded:
        print(f"Guardrails: {guarded}")
    return 0


def cmd_promote(wb: Workbench, args) -> int:
    wb.promote(args.version)
    print(f"{args.version} is now the active policy: new comparisons come from it.")
    return 0


def cmd_score(wb: Workbench, args) -> int:
    frame = wb.score(args.reward, args.comparison or None, args.limit)
    if not args.json:
        frame = frame.assign(text=frame["text"].str.slice(0, 70).str.replace("\n", " "))
    print_table(frame, args.json, "No comparisons to score yet: `rlhf generate` makes some.")
    return 0


def cmd_eval_reward(home: Home, args) -> int:
    """Needs no store: the version is read from models/<name>/."""
    from rlhf.collect.formats import read_preference_pairs
    from rlhf.modeling.scoring import evaluate_pairs, load_scorer
    from rlhf.preference.combination import is_combination

    path = home.model_dir(args.reward)
    if not (path / "config.json").is_file() and not is_combination(path):
        known = sorted(p.name for p in home.models_dir.iterdir() if (p / "card.json").is_file())
        raise JobError(f"There is no reward model '{args.reward}' in {home.models_dir}"
                       f" (trained versions: {', '.join(known) or 'none'}).")
    card = json.loads((path / "card.json").read_text()) if (path / "card.json").is_file() else {}
    if card.get("kind", "reward") != "reward":
        raise wrong_kind(args.reward, card["kind"], "reward", "the version scored")
    result = evaluate_pairs(load_scorer(path), read_preference_pairs(args.file))
    if args.json:
        print(json.dumps({"reward": args.reward, "file": args.file, **result}))
    else:
        interval = {"accuracy_low", "accuracy_high"}
        print(f"{args.reward} on {args.file}: " + ", ".join(
            (f"{key} {value:.4g} [95% CI {result['accuracy_low']:.4g}, {result['accuracy_high']:.4g}]"
             if key == "accuracy" else f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
            for key, value in result.items() if key not in interval))
    return 0


def add_commands(command, commands, home_option, json_option) -> None:
    train = command("train", cmd_train, "train a reward model or a policy from the rankings, or a policy on a corpus"
                    " of domain text (pretrain --corpus FILE): a job",
                    parents=(home_option, json_option),
                    epilog="Settings: TRL config field names (learning_rate, max_steps, beta, ...) or workbench "
                    "options (adapter=lora|prompt|full|qlora|last_layers, lora_r, trainable_layers, merge, eval_fraction,"
                    " and per method: "
                    + "; ".join(f"{m.name}: {', '.join(m.options) or 'none'}" for m in METHODS.values()) + ").")
    train.add_argument("method", choices=list(METHODS))
    train.add_argument("--base", help="policy version to start from (default: the active policy)")
    train.add_argument("--reward", help="reward model for ppo/grpo/rloo (default: the newest)")
    train.add_argument("--corpus", metavar="FILE", help="for pretrain: the domain text, a .txt or .md file (one"
                       " document), JSONL with a text field or Parquet with a text column (a document per line or"
                       " row), each may be .gz; the job's snapshot keeps a copy")
    train.add_argument("--config", help="YAML file of settings (and an optional `selection:` mapping)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="a setting; repeatable")
    train.add_argument("--prompt-set", dest="prompt_sets", action="append", help="only these prompt sets")
    train.add_argument("--category", dest="categories", action="append",
                       help="only the rankings of prompts in these categories (e.g. safety, for a safety reward model)")
    train.add_argument("--annotator", dest="annotators", action="append", help="only these annotators' rankings")
    train.add_argument("--round", dest="rounds", type=int, action="append", metavar="N",
                       help="only rankings of comparisons made in round N (repeatable)")
    train.add_argument("--since", help="rankings made on or after this date (YYYY-MM-DD)")
    train.add_argument("--until", help="rankings made on or before this date")
    train.add_argument("--min-agreement", type=float, help="drop comparisons whose annotators agree less (0-1)")
    train.add_argument("--queue", action="store_true", help="only queue the job (a server or `rlhf jobs run` runs it)")
    train.set_defaults(via_server=train_via_server)

    jobs = command("jobs", cmd_jobs, "list training jobs; `jobs show ID`, `jobs cancel ID`, `jobs log ID`, `jobs run`",
                   parents=(home_option, json_option))
    jobs.add_argument("--limit", type=int, default=20)
    jobs.set_defaults(via_server=jobs_from_files)
    job_commands = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND")
    cancel = job_commands.add_parser("cancel", parents=[home_option], help="cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(handler=cmd_jobs_cancel, via_server=cancel_via_server)
    log = job_commands.add_parser("log", parents=[home_option], help="print a job's log")
    log.add_argument("job_id", type=int)
    log.add_argument("--tail", type=int, help="only the last N lines")
    log.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    log.set_defaults(handler=cmd_jobs_log, without_store=True)
    show = job_commands.add_parser("show", parents=[home_option, json_option],
                                   help="a job's state, final metrics and guardrails")
    show.add_argument("job_id", type=int)
    show.set_defaults(handler=cmd_jobs_show, without_store=True)
    job_commands.add_parser("run", parents=[home_option], help="run the queued jobs here, one after another"
                            ).set_defaults(handler=cmd_jobs_run)

    promote = command("promote", cmd_promote, "make a policy version the active one (new comparisons come from it)")
    promote.add_argument("version")

    score = command("score", cmd_score, "score stored completions with a reward model",
                    parents=(home_option, json_option))
    score.add_argument("--reward", help="reward model version (default: the newest)")
    score.add_argument("--comparison", type=int, action="append", help="comparison id; repeatable")
    score.add_argument("--limit", type=int, default=10, help="newest N comparisons when none is named")

    evaluate = command("eval-reward", cmd_eval_reward,
                       "pairwise accuracy of a reward model on a preference file (formats of `rankings import --pairs`)",
                       parents=(home_option, json_option))
    evaluate.add_argument("--reward", required=True, help="reward model version")
    evaluate.add_argument("file")
    evaluate.set_defaults(without_store=True)
