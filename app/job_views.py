"""What the Train tab and the job API show about methods, jobs and model versions:
plain dicts and DataFrames built from `rlhf.jobs.service.Jobs` and the method table, with no
Gradio in them (and no SQL or torch: the store is read through `Jobs` and `Workbench`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.files import read_status
from rlhf.train.methods import METHODS, SettingsError, method, options_of, parse_assignments, scalar
from rlhf.train.schedule import decided_keys

ACTIVE = ("queued", "running")
LOG_LINES = 40

# Short help for the config fields the methods set by default (the options carry their own).
CONFIG_HELP = {
    "learning_rate": "optimiser step size",
    "num_train_epochs": "passes over the training rows (max_steps, when set, wins)",
    "max_steps": "stop after this many optimiser steps (-1: use num_train_epochs)",
    "per_device_train_batch_size": "examples per step on each device",
    "gradient_accumulation_steps": "steps whose gradients are summed before an update",
    "max_length": "longest prompt + completion in tokens (longer ones are cut)",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "lr_scheduler_type": "learning-rate schedule after warm-up",
    "seed": "random seed (data order, initialisation, sampling)",
    "beta": "strength of the KL pull towards the reference policy",
    "num_generations": "completions sampled per prompt (the group)",
    "max_completion_length": "longest sampled completion in tokens",
    "temperature": "sampling temperature of the completions",
}

# What a training run logs about itself rather than about learning.
BOOKKEEPING = ("learning_rate", "grad_norm", "epoch", "total_flos", "num_tokens", "step_time")
BOOKKEEPING_SUFFIXES = ("_runtime", "_per_second", "/runtime", "/samples_per_second", "/steps_per_second")
# The figures a method is judged by, shown by default when logged.
KEY_METRIC_MARKS = ("accurac", "margin", "perplexity", "reward/mean", "rewards/mean", "reward_mean", "kl", "score")
# Figures trainers log that say little about what was learnt.
DIAGNOSTICS = ("mean_token_accuracy", "entropy", "num_tokens", "logits", "logps", "examples", "steps")

# The guardrails every policy job measures at its end (rlhf.train.guard): their own plot
# and their own columns in the models table.
GUARD = "guard/"
GUARD_PLOTTED = ("guard/heldout_accuracy", "guard/kl")
GUARD_COLUMNS = {"held-out acc": "guard/heldout_accuracy", "KL": "guard/kl", "repetition": "guard/repetition"}

ROW_WORDS = {"rankings": "rankings", "pairs": "preference pairs", "unpaired": "labelled completions",
             "sft": "demonstrations", "prompts": "prompts", "corpus": "documents of a corpus file"}

# Continued pretraining's held-out figure (rlhf.train.pretrain): the perplexity before and after.
PERPLEXITY_BEFORE, PERPLEXITY = "eval/perplexity_before", "eval/perplexity"


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    help: str
    choices: tuple = ()
    source: str = "config"   # "config": a field of the method's config class; "option": the workbench's
    # Set from the job's data (rlhf.train.schedule) unless given: shown blank, and any value
    # typed in is sent, even one equal to `default` (the value the rule gives a mid-sized set).
    from_data: bool = False

    @property
    def kind(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        return "str"


def method_settings(name: str) -> list[Setting]:
    """The settings a method shows with their defaults: its key config fields, then the
    workbench options (adapter, LoRA, ...) with their help and choices."""
    spec = method(name)
    config_class = spec.config_class.rpartition(".")[2]
    from_data = decided_keys(spec.name) if spec.scheduled else ()
    shown = [Setting(key, value, CONFIG_HELP.get(key, f"a field of {config_class}"), from_data=key in from_data)
             for key, value in spec.defaults.items()]
    shown += [Setting(key, option.default, option.help, tuple(option.choices), "option")
              for key, option in options_of(spec).items()]
    return shown


def all_settings() -> dict[str, Setting]:
    """Every setting any method shows, by key (the first method's default and help): the
    config fields first, the commonest first, then the workbench options."""
    found: dict[str, Setting] = {}
    for name in METHODS:
        for setting in method_settings(name):
            found.setdefault(setting.key, setting)
    order = list(CONFIG_HELP)
    ranked = sorted(found.values(), key=lambda s: (s.source == "option",
                                                   order.index(s.key) if s.key in order else len(order)))
    return {setting.key: setting for setting in ranked}


def decided_by_data() -> frozenset[str]:
    """The settings that some method leaves to its data (one widget serves every method)."""
    return frozenset(s.key for name in METHODS for s in method_settings(name) if s.from_data)


def method_help(name: str) -> str:
    spec = method(name)
    config_class = spec.config_class.rpartition(".")[2]
    makes = "a reward model" if spec.kind == "reward" else "a policy"
    needs = " It needs a reward model." if spec.needs_reward else ""
    return (f"**{spec.name}**: {spec.help}. Makes {makes} from {ROW_WORDS.get(spec.data, spec.data)}.{needs}"
            f" Training fields of {config_class} go in More settings; those that choose where files go, where"
            f" logs are reported or what else runs are the workbench's and are refused.")


def changed_settings(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values that differ from the method's defaults, for the method's own settings only
    (a blank field means the default), and every value given for a setting decided from the
    data (its default is only what the rule would give a mid-sized set)."""
    changed = {}
    for setting in method_settings(name):
        if setting.key not in values:
            continue
        value = values[setting.key]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if setting.kind in ("int", "float") and isinstance(value, str):
            value = scalar(value)   # a field the data may decide is a text box, blank by default
        if setting.kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if setting.from_data or value != setting.default:
            changed[setting.key] = value
    return changed


def parse_more_settings(text: str | None) -> dict[str, Any]:
    """`key=value` lines (blank lines and `#` comments ignored) as settings."""
    lines = [line.strip() for line in (text or "").splitlines()]
    return parse_assignments([line for line in lines if line and not line.startswith("#")])


def job_request(method_name: str, base: str | None, reward: str | None, settings: dict | None,
                selection: dict | None, created_by: str, corpus: str | None = None) -> JobRequest:
    """A request as the tab and the API make it: a reward model only for the methods that
    use one, a corpus file (an upload's path: the service refuses it for a method that
    trains on no corpus), empty strings and empty lists meaning "not given"."""
    spec = method(method_name)
    if settings is not None and not isinstance(settings, dict):
        raise SettingsError("settings must be a mapping of setting names to values, e.g. {\"max_steps\": 10}.")
    if selection is not None and not isinstance(selection, dict):
        raise SettingsError("selection must be a mapping, e.g. {\"prompt_sets\": [\"default\"]}.")
    chosen = {key: value for key, value in (selection or {}).items() if value not in (None, "", [])}
    return JobRequest(spec.name, base or None, (reward or None) if spec.needs_reward else None,
                      dict(settings or {}), chosen, created_by, corpus or None)


def preview_sentence(preview: dict) -> str:
    if preview.get("corpus"):
        corpus = preview["corpus"]
        return (f"The corpus {corpus['file']} gives {corpus['documents']:,} document"
                f"{'' if corpus['documents'] == 1 else 's'} of {corpus['characters']:,} characters"
                f" (base {preview['base']}); the job cuts them into chunks of max_length tokens.")
    words = ROW_WORDS.get(preview["data"], "rows")
    where = f" from {preview['comparisons']} comparisons" if preview.get("comparisons") is not None else ""
    reward = f", reward model {preview['reward']}" if preview.get("reward") else ""
    return f"This selection gives {preview['rows']} {words}{where} (base {preview['base']}{reward})."


# -- jobs ---------------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A value from a DataFrame row as JSON can carry it (timestamps as ISO text, NaN/NaT as None)."""
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def format_seconds(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def last_values(metrics: pd.DataFrame) -> dict[str, float]:
    """The latest logged value of each metric."""
    if metrics.empty:
        return {}
    latest = metrics.sort_values("step").groupby("name")["value"].last()
    return {name: jsonable(value) for name, value in latest.items()}


def job_status(jobs: Jobs, job_id: int, log_lines: int | None = LOG_LINES) -> dict:
    """A job as the tab and `/job_status` show it: its row, its progress and ETA from the
    worker's status.json, its latest metrics, and the tail of its log."""
    job = jobs.get(int(job_id))
    spec = job.get("spec") or {}
    written = read_status(jobs.job_dir(job["id"])) if job["status"] in ("running", "succeeded") else {}
    status = written if job["status"] == "running" else {}
    finished = written if job["status"] == "succeeded" else {}
    step = jsonable(job.get("step")) or 0
    total = jsonable(job.get("total_steps"))
    if job["status"] == "running" and status:
        step, total = status.get("step") or step, status.get("total") or total
    fraction = None
    if total:
        fraction = 1.0 if job["status"] == "succeeded" else min(1.0, step / total)
    eta = status.get("eta_seconds") if job["status"] == "running" else None
    return {
        "job_id": int(job["id"]),
        "method": spec.get("method") or job.get("kind"),
        "status": job["status"],
        "phase": _phase(status) if job["status"] == "running" else None,
        "message": status.get("message") or None,
        "step": int(step),
        "total": total,
        "progress": fraction,
        "eta_seconds": eta,
        "eta": format_seconds(eta),
        "elapsed_seconds": status.get("elapsed_seconds"),
        "base": spec.get("base"),
        "reward": spec.get("reward"),
        "rows": spec.get("rows"),
        "settings": spec.get("config"),
        "options": spec.get("options"),
        "selection": spec.get("selection"),
        "output_version": jsonable(job.get("output_version")),
        "error": jsonable(job.get("error")),
        "created_by": jsonable(job.get("created_by")),
        "created_at": jsonable(job.get("created_at")),
        "started_at": jsonable(job.get("started_at")),
        "finished_at": jsonable(job.get("finished_at")),
        "metrics": last_values(jobs.metrics(job["id"])),
        "final_metrics": jsonable(finished.get("metrics") or {}),
        "log_tail": jobs.log_text(job["id"], tail=log_lines) if log_lines else "",
    }


def _phase(status: dict) -> str | None:
    """What a running job's worker says it is doing; once it has ended, the server is
    still moving its model into place."""
    state = status.get("state")
    return "finishing" if state in ("succeeded", "failed", "cancelled") else state


def status_sentence(status: dict) -> str:
    """One line: job, method, state, step, ETA or outcome (plain text)."""
    parts = [f"Job {status['job_id']}: {status['method']} from {status['base']}"
             + (f" with reward model {status['reward']}" if status.get("reward") else "")
             + (f" on {status['rows']} rows" if status.get("rows") is not None else "")]
    state = status["status"] + (f" ({status['phase']})" if status.get("phase") not in (None, "running") else "")
    parts.append(state)
    if status.get("total"):
        parts.append(f"step {status['step']}/{status['total']}")
    if status.get("eta"):
        parts.append(f"ETA {status['eta']}")
    if status["status"] == "succeeded" and status.get("output_version"):
        parts.append(f"made {status['output_version']}")
    if status.get("error"):
        parts.append(status["error"])
    held_out = perplexity_summary(status.get("final_metrics"))
    if held_out:
        parts.append(held_out)
    guarded = guard_summary(status.get("final_metrics"))
    if guarded:
        parts.append(guarded)
    return " · ".join(parts)


def jobs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The jobs list (newest first) as the tab shows it."""
    columns = ["id", "method", "status", "progress", "base", "reward", "output_version", "created_by",
               "created_at", "error"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    progress = [f"{int(s or 0)}/{int(t)}" if pd.notna(t) and t else str(int(s or 0))
                for s, t in zip(frame["step"].fillna(0), frame["total_steps"])]
    table = frame.assign(progress=progress)
    table["created_at"] = [format_time(value) for value in table["created_at"]]
    return table[columns].astype(object).where(table[columns].notna(), "")


def format_time(value) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def job_list(frame: pd.DataFrame) -> list[dict]:
    """The jobs list for the API: one dict per job, JSON-ready."""
    return [{key: jsonable(value) for key, value in row.items()} for row in frame.to_dict("records")]


def job_choices(frame: pd.DataFrame) -> list[tuple[str, int]]:
    return [(f"#{int(row['id'])} {row['method']} ({row['status']})", int(row["id"]))
            for row in frame.to_dict("records")]


def default_job(frame: pd.DataFrame) -> int | None:
    """The job a freshly opened page watches: the newest running one, else the newest queued,
    else the newest."""
    for status in ("running", "queued"):
        found = frame[frame["status"] == status] if not frame.empty else frame
        if not found.empty:
            return int(found["id"].max())
    return int(frame["id"].max()) if not frame.empty else None


def anything_active(frame: pd.DataFrame) -> bool:
    return not frame.empty and bool(frame["status"].isin(ACTIVE).any())


def jobs_signature(frame: pd.DataFrame) -> str:
    """Changes whenever a job is added or moves (status or step)."""
    if frame.empty:
        return ""
    return json.dumps([[int(i), s, int(p or 0)] for i, s, p in zip(frame["id"], frame["status"], frame["step"].fillna(0))])


# -- metrics for the plots --------------------------------------------------------------------

def is_loss(name: str) -> bool:
    return "loss" in name


def is_bookkeeping(name: str) -> bool:
    leaf = name.rpartition("/")[2]
    return name in BOOKKEEPING or leaf in BOOKKEEPING or name.endswith(BOOKKEEPING_SUFFIXES) or "flos" in name


def metric_names(metrics: pd.DataFrame) -> list[str]:
    """The names a job logged that are not losses, in the order first logged."""
    if metrics.empty:
        return []
    return [name for name in dict.fromkeys(metrics.sort_values("step")["name"]) if not is_loss(name)]


def default_metric_names(names: list[str]) -> list[str]:
    """The method's key figures when logged (accuracy, margins, mean reward, KL), else every
    name that is not bookkeeping."""
    learning = [name for name in names if not is_bookkeeping(name) and not name.startswith(GUARD)]
    key = [name for name in learning if any(mark in name for mark in KEY_METRIC_MARKS)
           and not any(word in name for word in DIAGNOSTICS)]
    return key or learning


def plot_frames(metrics: pd.DataFrame, chosen: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(losses, other metrics) in long format step/value/name for two line plots; `chosen`
    picks the other metrics (none chosen: the key ones)."""
    empty = pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                          "name": pd.Series(dtype="object")})
    if metrics.empty:
        return empty, empty.copy()
    frame = metrics[["step", "value", "name"]].astype({"step": "int64", "value": "float64"})
    frame = frame[frame["value"].map(math.isfinite)]
    losses = frame[frame["name"].map(is_loss)].reset_index(drop=True)
    names = [name for name in (chosen or default_metric_names(metric_names(metrics)))]
    others = frame[frame["name"].isin(names) & ~frame["name"].map(is_loss)].reset_index(drop=True)
    return losses, others


def guard_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """The guardrail figures (held-out accuracy, KL to the parent) in long format
    step/value/name for their own plot: the parent's at step 0, the job's at its end."""
    frame = metrics[["step", "value", "name"]] if not metrics.empty else metrics.reindex(columns=["step", "value",
                                                                                                   "name"])
    frame = frame[frame["name"].isin(GUARD_PLOTTED)].astype({"step": "int64", "value": "float64"})
    return frame.sort_values(["name", "step"]).reset_index(drop=True)


def stored_metrics(metrics: Any) -> dict:
    """A version's or a job's metrics as a dict (stored as JSON text, or missing)."""
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError:
            return {}
    return metrics if isinstance(metrics, dict) else {}


def perplexity_summary(metrics: Any) -> str:
    """Continued pretraining's report in one line: the held-out perplexity before and
    after, on how many chunks; "" for a job that has none."""
    metrics = stored_metrics(metrics)
    if PERPLEXITY not in metrics or PERPLEXITY_BEFORE not in metrics:
        return ""
    chunks = int(metrics.get("corpus/heldout_chunks", 0))
    return (f"held-out perplexity {metrics[PERPLEXITY_BEFORE]:.4g} before, {metrics[PERPLEXITY]:.4g} after"
            f" ({chunks} chunk{'' if chunks == 1 else 's'} of the corpus held out)")


def perplexity_figure(metrics: dict) -> str:
    """The models table's held-out perplexity: "before → after" ("" when not measured)."""
    before, after = metrics.get(PERPLEXITY_BEFORE), metrics.get(PERPLEXITY)
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (before, after)):
        return ""
    return f"{before:.3g} → {after:.3g}"


def guard_summary(metrics: Any) -> str:
    """A policy job's guardrails in one line: held-out accuracy, KL, repetition, then the
    sentence when it moved too little or too far, or what could not be measured."""
    metrics = stored_metrics(metrics)
    parts = []
    if "guard/heldout_accuracy" in metrics:
        parts.append(f"held-out accuracy {metrics['guard/heldout_accuracy']:.2f}"
                     f" on {int(metrics.get('guard/heldout_pairs', 0))} pairs")
    if "guard/kl" in metrics:
        parts.append(f"KL to parent {metrics['guard/kl']:.3g} nats")
    if "guard/repetition" in metrics:
        parts.append(f"repetition {metrics['guard/repetition']:.0%}")
    words = ", ".join(parts)
    for key in ("guard/verdict", "guard/note"):
        if metrics.get(key):
            words = f"{words}. {metrics[key]}" if words else str(metrics[key])
    return words


# -- model versions ---------------------------------------------------------------------------

def metrics_summary(metrics: Any, limit: int = 4) -> str:
    """A version's stored metrics in one short line: held-out figures first, the method's
    key ones (accuracy, margins, mean reward, KL) before the losses, no diagnostics."""
    if metrics is None or (isinstance(metrics, float) and math.isnan(metrics)):
        return ""
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError:
            return metrics
    if not isinstance(metrics, dict) or not metrics:
        return ""
    numbers = {key: value for key, value in metrics.items() if isinstance(value, (int, float))
               and not isinstance(value, bool) and not is_bookkeeping(key) and not key.startswith(GUARD)
               and not any(word in key for word in DIAGNOSTICS)}

    def rank(key: str) -> tuple:
        marks = [i for i, mark in enumerate(KEY_METRIC_MARKS) if mark in key]
        return (not key.startswith("eval"), marks[0] if marks else len(KEY_METRIC_MARKS) + (0 if is_loss(key) else 1),
                key)

    return ", ".join(f"{key} {numbers[key]:.4g}" for key in sorted(numbers, key=rank)[:limit])


def models_table(frame: pd.DataFrame, evaluations: dict[str, str] | None = None) -> pd.DataFrame:
    """Every version with its lineage: name, kind, status, parent, method, a reward
    version's objective (the rankings, a rated dimension, or a combination), a prompt
    version's system prompt and template (text, never markup), job, training
    metrics, and its newest automatic evaluation (`evaluations`: rlhf.compare.summaries.version_summaries)."""
    columns = ["name", "kind", "status", "parent", "method", "objective", "system_prompt", "template", "job",
               *GUARD_COLUMNS, "held-out ppl", "guardrail", "metrics", "evaluation", "created_at"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    stored = [stored_metrics(m) for m in frame["metrics"]]
    table = pd.DataFrame({
        "name": frame["name"], "kind": frame["kind"], "status": frame["status"], "parent": frame["parent"],
        "method": frame["method"],
        **{column: list(frame[column]) if column in frame else [""] * len(frame)
           for column in ("objective", "system_prompt", "template")},
        "job": [f"#{int(j)}" if pd.notna(j) else "" for j in frame["job_id"]],
        **{column: [guard_figure(m, key) for m in stored] for column, key in GUARD_COLUMNS.items()},
        "held-out ppl": [perplexity_figure(m) for m in stored],
        "guardrail": [m.get("guard/verdict") or "" for m in stored],
        "metrics": [metrics_summary(m) for m in frame["metrics"]],
        "evaluation": [(evaluations or {}).get(name, "") for name in frame["name"]],
        "created_at": [format_time(value) for value in frame["created_at"]],
    })
    table = table.iloc[::-1].reset_index(drop=True)  # newest first
    return table.astype(object).where(table.notna(), "")


def guard_figure(metrics: dict, key: str) -> str:
    """One guardrail figure as the models table shows it ("" when not measured)."""
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return f"{value:.0%}" if key == "guard/repetition" else f"{value:.3g}"


def model_list(frame: pd.DataFrame) -> list[dict]:
    """The versions for the API, newest last, metrics as a dict."""
    rows = []
    for row in frame.to_dict("records"):
        metrics = row.get("metrics")
        if isinstance(metrics, str):
            try:
                metrics = json.loads(metrics)
            except ValueError:
                pass
        rows.append({key: jsonable(row.get(key)) for key in ("name", "kind", "status", "parent", "method",
                                                             "objective", "system_prompt", "template", "base_model",
                                                             "job_id", "created_at")}
                    | {"metrics": jsonable(metrics)})
    return rows
