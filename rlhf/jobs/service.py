"""Training jobs: checked and snapshotted here, trained by a worker subprocess
(`rlhf.jobs.worker`), watched and ingested here.

This module is `Jobs`, the service; `rlhf.jobs.runner` runs the jobs, `rlhf.jobs.files`
reads and writes a job's directory, `rlhf.jobs.requests` carries the CLI's requests.

`Jobs` lives in the process that owns the store (the server, or the CLI when no server
runs). Submitting checks everything a job needs (method, settings, base and reward
versions, enough data) before anything is written, then writes `jobs/<id>/spec.json` and
`data.parquet` (exactly the rows the job trains on) and a queued job row. `JobRunner`
runs queued jobs one at a time: it starts the worker, copies its progress and metrics
into the store as they come, and on success moves `model/` to `models/<version>/`, writes
`card.json` and registers the version, in one transaction with the job's end. A worker
that crashes or is killed leaves a failed job with its log and no version.

A CLI started while the server holds the store hands requests over through files in
`jobs/requests/`; a thread of the server's runner answers them, while a job runs too.

A worker runs in its own session, so a stop reaches its whole process group (a launcher's
children too): SIGTERM (a clean stop at the next step), SIGKILL when it has not ended
CANCEL_GRACE_SECONDS later. A cancel is a `cancel` file in the job's directory that the
watching runner acts on. A PID read back from a file is signalled only while that process
is still this job's worker. Moving a trained model into `models/` and registering it is
preceded by a `registering.json` intent, so a crash in between is undone at the next start.
A SPIN job's earlier iterations travel inside its model (`iterations/<t>/`) and are
registered in the same transaction, each the parent of the next.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rlhf.errors import UserError
from rlhf.home import Home
from rlhf.jobs import training_data
from rlhf.jobs.files import (
    CANCEL_GRACE_SECONDS,
    INTENT_FILE,
    ask_to_stop,
    clear_intent,
    move_into_place,
    read_log,
    rank_failure,
    read_status,
    signal_worker,
    stop_asked,
    worker_death,
    write_card,
    write_intent,
)
from rlhf.jobs.training_data import Selection
from rlhf.modeling import hard_prompt
from rlhf.train.methods import method, resolve
from rlhf.train.spin import iteration_dirs, iteration_metrics
from rlhf.versions import ModelVersion, lookup
from storage import jobs as job_rows
from storage import models
from storage.db import Store
from storage.scores import newest_reward

log = logging.getLogger(__name__)


class JobError(UserError):
    """A job request refused, or an operation on a job that cannot be done."""


@dataclass
class JobRequest:
    method: str
    base: str | None = None        # policy version; None: the active policy
    reward: str | None = None      # reward version for ppo/grpo/rloo; None: the newest
    settings: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    created_by: str | None = None
    corpus: str | None = None      # a corpus file for the methods that train on one (pretrain)


@dataclass
class Prepared:
    spec: dict
    rows: pd.DataFrame


def version_name(method_name: str, job_id: int) -> str:
    return f"{method_name}-{job_id}"


class Jobs:
    def __init__(self, home: Home, store: Store):
        self.home, self.store = home, store

    # -- submitting -------------------------------------------------------------------

    def prepare(self, request: JobRequest) -> Prepared:
        """Everything a job needs, checked; raises a UserError with one sentence."""
        spec = method(request.method)
        config, options = resolve(spec.name, request.settings)
        cur = self.store.cursor()
        base = self._version(cur, request.base, "policy")
        reward = self._version(cur, request.reward, "reward") if spec.needs_reward or request.reward else None
        selection = Selection.from_dict(request.selection)
        rows = training_data.build(cur, spec, options, selection, request.corpus)
        corpus = {"corpus": training_data.corpus_summary(request.corpus, rows)} if spec.data == "corpus" else {}
        return Prepared(
            spec={
                "method": spec.name, "kind": spec.kind,
                "base": base.name, "base_path": str(base.path),
                "base_model": base.base_model,
                "reward": reward and reward.name,
                "reward_path": reward and str(reward.path),
                "config": config, "options": options, "selection": selection.as_dict(),
                "settings": sorted(request.settings),  # what the user chose; the schedule fills in the rest
                "rows": len(rows), "created_by": request.created_by, **corpus,
            },
            rows=rows,
        )

    def preview(self, request: JobRequest) -> dict:
        """How much the request would train on, without making a job."""
        prepared = self.prepare(request)
        rows = prepared.rows
        return {"rows": len(rows), "data": method(request.method).data,
                "comparisons": int(rows["comparison_id"].nunique()) if "comparison_id" in rows else None,
                "base": prepared.spec["base"], "reward": prepared.spec["reward"],
                **({"corpus": prepared.spec["corpus"]} if "corpus" in prepared.spec else {})}

    def submit(self, request: JobRequest) -> int:
        prepared = self.prepare(request)
        with self.store.transaction() as cur:
            job_id = job_rows.create(cur, prepared.spec["method"], prepared.spec, request.created_by)
            job_dir = self.home.jobs_dir / str(job_id)
            spec = {**prepared.spec, "job_id": job_id,
                    "output_version": version_name(prepared.spec["method"], job_id)}
            try:
                job_dir.mkdir(parents=True, exist_ok=False)
                prepared.rows.to_parquet(job_dir / "data.parquet", index=False)
                (job_dir / "spec.json").write_text(json.dumps(spec, indent=2))
            except OSError as error:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise JobError(f"Cannot write the job's snapshot to {job_dir}: {error.strerror}.") from None
            job_rows.set_spec(cur, job_id, spec, str(job_dir.relative_to(self.home.root)))
        log.info("Queued job %d: %s from %s on %d rows.", job_id, spec["method"], spec["base"], spec["rows"])
        return job_id

    def _version(self, cur, name: str | None, kind: str) -> ModelVersion:
        if name is None:
            name = models.active_policy(cur) if kind == "policy" else newest_reward(cur)
            if name is None:
                raise JobError("No policy is active: promote one, or name the base version to train from."
                               if kind == "policy" else
                               "This method needs a reward model and there is none yet: train one first"
                               " (method reward), or name a reward version.")
        version = lookup(cur, self.home.root, name)
        if kind == "policy" and hard_prompt.is_prompt_version(version.path):
            raise JobError(hard_prompt.training_refusal(version.name, version.parent))
        return version.policy("the base version") if kind == "policy" else version.reward("the reward version")

    # -- looking -----------------------------------------------------------------------

    def get(self, job_id: int) -> dict:
        job = job_rows.get(self.store.cursor(), job_id)
        if job is None:
            raise JobError(f"There is no job {job_id}.")
        return job

    def list(self, limit: int | None = None) -> pd.DataFrame:
        return job_rows.list_jobs(self.store.cursor(), limit)

    def metrics(self, job_id: int) -> pd.DataFrame:
        return job_rows.metrics(self.store.cursor(), job_id)

    def job_dir(self, job_id: int) -> Path:
        return self.home.jobs_dir / str(job_id)

    def log_text(self, job_id: int, tail: int | None = None) -> str:
        return read_log(self.job_dir(self.get(job_id)["id"]), tail)

    def cancel(self, job_id: int) -> str:
        """Cancel a queued job at once, or ask a running one to stop; returns what was done."""
        job = self.get(job_id)
        if job["status"] == "queued":
            with self.store.transaction() as cur:
                if job_rows.cancel_queued(cur, job_id, "Cancelled before it started."):
                    return f"Job {job_id} was queued and is cancelled."
            job = self.get(job_id)  # the runner took it meanwhile: stop it as a running job
        if job["status"] != "running":
            raise JobError(f"Job {job_id} has already ended ({job['status']}).")
        ask_to_stop(self.job_dir(job_id), "Cancelled")
        return (f"Job {job_id} is stopping (it ends at its next step, or is killed"
                f" {CANCEL_GRACE_SECONDS} s after the stop was sent).")

    # -- ending ------------------------------------------------------------------------

    def finish(self, job_id: int, status: dict, exit_code: int | None) -> dict:
        """Record how the worker ended; on success move its model into place and register
        the version (the job and the version are written in one transaction)."""
        job = self.get(job_id)
        spec, job_dir = job["spec"], self.job_dir(job_id)
        state = status.get("state")
        failed_rank = rank_failure(job_dir)  # under a launcher: a rank other than 0 failed (when, why)
        if state == "succeeded" and (job_dir / "model").is_dir() and not failed_rank:
            return self._register(job_id, spec, status)
        stop_reason = stop_asked(job_dir)
        signalled = exit_code is not None and exit_code < 0
        # that rank's failure is the cause unless rank 0 failed first; the launcher stops the others
        if failed_rank and not stop_reason and (state != "failed" or failed_rank[0] <= status.get("failed_at", 0)):
            return self.end(job_id, "failed", failed_rank[1])
        if state == "cancelled" and not stop_reason and int(status.get("world_size", 1)) > 1:
            # no one asked: the launcher stopped rank 0 because another rank ended without a word (killed)
            return self.end(job_id, "failed", f"A rank of the {status['world_size']} ended before the job did, and"
                                              f" the launcher stopped the others at step {status.get('step', 0)};"
                                              " see the job's log.")
        if state == "cancelled" or exit_code == -signal.SIGTERM or (stop_reason and signalled):
            outcome = "cancelled"
            error = f"{stop_reason or 'Cancelled'} at step {status.get('step', 0)}."
            if exit_code == -signal.SIGKILL:
                error += " It had not stopped in time and was killed."
        else:
            outcome = "failed"
            error = status.get("error") if state == "failed" else worker_death(exit_code, job_dir)
        return self.end(job_id, outcome, error)

    def end(self, job_id: int, outcome: str, error: str) -> dict:
        """Record a job's end without a version (failed or cancelled) with its reason."""
        with self.store.transaction() as cur:
            job_rows.finish(cur, job_id, outcome, error)
        return self.get(job_id)

    def _register(self, job_id: int, spec: dict, status: dict) -> dict:
        """Move `model/` to `models/<version>/` and register it. The intent is written first:
        a crash before the commit leaves it, and `recover` moves the model back (then
        registers it again), so there is never a directory without a version or a version
        without weights."""
        job_dir = self.job_dir(job_id)
        name = spec["output_version"]
        target = self.home.model_dir(name)
        if target.exists():  # left by an attempt that crashed before the intent existed
            shutil.rmtree(target)
        write_intent(job_dir, name, target)
        move_into_place(job_dir / "model", target)
        metrics = status.get("metrics") or {}
        card = {
            "name": name, "kind": spec["kind"], "method": spec["method"], "parent": spec["base"],
            "base_model": spec["base_model"], "reward": spec.get("reward"), "job_id": job_id,
            "data_snapshot": str((job_dir / "data.parquet").relative_to(self.home.root)), "rows": spec["rows"],
            "weights": "adapter" if (target / "adapter_config.json").is_file() else "full",
            "config": spec["config"], "options": spec["options"], "selection": spec["selection"],
            "metrics": metrics, "train_seconds": status.get("seconds"),
            **({"corpus": spec["corpus"]} if spec.get("corpus") else {}),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # a SPIN job's earlier iterations, saved inside its model: a version each, each the parent of the next
        stages = [(f"{name}-it{folder.name}", folder, iteration_metrics(folder)) for folder in iteration_dirs(target)]
        parents = [spec["base"]] + [stage for stage, _, _ in stages]
        try:
            for (stage, folder, values), parent in zip(stages, parents):
                weights = "adapter" if (folder / "adapter_config.json").is_file() else "full"
                write_card(folder, {**card, "name": stage, "parent": parent, "metrics": values, "weights": weights})
            write_card(target, {**card, "parent": parents[-1]})
            with self.store.transaction() as cur:
                for (stage, folder, values), parent in zip(stages, parents):
                    models.register(cur, stage, spec["kind"], base_model=spec["base_model"],
                                    path=str(folder.relative_to(self.home.root)), method=spec["method"],
                                    parent=parent, job_id=job_id, data_snapshot=card["data_snapshot"],
                                    metrics=values)
                models.register(cur, name, spec["kind"], base_model=spec["base_model"],
                                path=str(target.relative_to(self.home.root)), method=spec["method"],
                                parent=parents[-1], job_id=job_id, data_snapshot=card["data_snapshot"],
                                metrics=metrics)
                job_rows.finish(cur, job_id, "succeeded", output_version=name)
        except BaseException:
            self._undo_move(job_id)  # no version without its row, no row without its weights
            raise
        clear_intent(job_dir)
        return self.get(job_id)

    def _undo_move(self, job_id: int) -> None:
        """After a move into `models/` that was not registered: the model back into the
        job's directory. A registered version keeps its weights; the intent goes either way."""
        job_dir = self.job_dir(job_id)
        try:
            intent = json.loads((job_dir / INTENT_FILE).read_text())
        except (OSError, ValueError):
            return
        target = Path(intent["target"])
        if models.get(self.store.cursor(), intent["name"]) is None and target.is_dir():
            if (job_dir / "model").exists():  # both: the crash came before the move finished
                shutil.rmtree(target)
            else:
                target.rename(job_dir / "model")
            log.warning("Job %d: %s was moved into place but not registered; moved back.", job_id, intent["name"])
        clear_intent(job_dir)

    def recover(self) -> None:
        """Jobs left 'running' by a process that ended: undo a model's move that was not
        registered, ingest a finished result, else mark them failed (and stop a worker still
        running without its watcher)."""
        for intent in self.home.jobs_dir.glob(f"*/{INTENT_FILE}"):  # a crash while moving a model
            self._undo_move(int(intent.parent.name))
        for job_id in job_rows.ids_with_status(self.store.cursor(), "running"):
            status = read_status(self.job_dir(job_id))
            if status.get("state") in ("succeeded", "failed", "cancelled"):
                self.finish(job_id, status, None)
                continue
            signal_worker(self.job_dir(job_id), signal.SIGKILL)
            self.end(job_id, "failed", "The process watching this job stopped before the job ended; see its log.")
