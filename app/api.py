"""Named API endpoints for scripts using `gradio_client`: the annotation loop exactly as
the page runs it, the researcher's queue controls, and training jobs and model versions
(`register_jobs`). Every endpoint reads the user from the login session and checks the
role on the server."""

from __future__ import annotations

import gradio as gr

from app.session import current_user, user_error
from rlhf import job_views
from rlhf.auth import STAFF
from rlhf.annotation import Annotation, Item, Submission
from rlhf.jobs import Jobs
from rlhf.pregenerate import PreGenerator



def item_payload(item: Item | None) -> dict:
    if item is None:
        return {"comparison_id": None, "message": "No comparison is waiting for you right now."}
    return {
        "comparison_id": item.comparison_id,
        "prompt": item.prompt,
        "messages": item.messages,
        "letters": item.letters,
        "completions": dict(zip(item.letters, item.completions)),
        "guidelines_version": item.guidelines_version,
        "dimensions": list(item.dimensions),
        "progress": item.progress,
    }


def register(service: Annotation, pregenerator: PreGenerator) -> None:
    """Declare the endpoints inside the app's Blocks context."""

    def next_comparison(request: gr.Request) -> dict:
        """The next comparison for the logged-in annotator (claimed for them), or
        comparison_id null when none is waiting."""
        user = current_user(service, request)
        with user_error():
            return item_payload(service.next_item(user))

    def submit_ranking(comparison_id: int, ranking: str, seconds_spent: float | None = None,
                       labels: dict | None = None, ratings: dict | None = None, none_acceptable: bool = False,
                       better_answer: str | None = None, comment: str | None = None, fetch_next: bool = False,
                       request: gr.Request = None) -> dict:
        """Store the logged-in user's ranking, e.g. 'C > B = D > A'. labels: {letter: {good, flag}};
        ratings: {letter: {dimension: 1-5}}. Submitting the same ranking twice stores it once.
        With fetch_next, the reply also hands over the next comparison ('next'), as the page does
        (it is then claimed for this user)."""
        user = current_user(service, request)
        with user_error():
            result = service.submit(user, Submission(int(comparison_id), ranking, seconds_spent, labels, ratings,
                                                     bool(none_acceptable), better_answer, comment))
            return {**result, "next": item_payload(service.next_item(user))} if fetch_next else result

    def skip_comparison(comparison_id: int, reason: str, request: gr.Request = None) -> dict:
        """Skip a comparison with a reason; it is not handed to this user again."""
        user = current_user(service, request)
        with user_error():
            return service.skip(user, int(comparison_id), reason)

    def progress(request: gr.Request) -> dict:
        """Done today, done in total, and what is waiting, for the logged-in user."""
        return service.progress(current_user(service, request))

    def queue_settings(overlap: int | None = None, prompt_sets: list[str] | None = None,
                       model_version: str | None = None, ready_target: int | None = None,
                       gold_rate: float | None = None, request: gr.Request = None) -> dict:
        """Researchers: change the queue (fields left null keep their value); returns it."""
        user = current_user(service, request, *STAFF)
        changes = {name: value for name, value in dict(overlap=overlap, prompt_sets=prompt_sets,
                   model_version=model_version, ready_target=ready_target, gold_rate=gold_rate).items()
                   if value is not None}
        with user_error():
            config = service.set_config(user, **changes)
        return {**vars(config), "dimensions": list(config.dimensions), "generation": pregenerator.status()}

    def mark_gold(comparison_id: int, ranking: str | None, request: gr.Request = None) -> dict:
        """Researchers: make a comparison a gold item with its expected ranking (null to unmark)."""
        user = current_user(service, request, *STAFF)
        with user_error():
            stored = service.mark_gold(user, int(comparison_id), ranking)
        return {"comparison_id": int(comparison_id), "gold": stored}  # canonical, as stored

    for endpoint in (next_comparison, submit_ranking, skip_comparison, progress, queue_settings, mark_gold):
        gr.api(endpoint, api_name=endpoint.__name__, concurrency_limit=None)


def register_jobs(service: Annotation, jobs: Jobs) -> None:
    """Researchers' training-job endpoints (declared inside the app's Blocks context).
    settings: {name: value} (config fields under TRL's names, or workbench options);
    selection: {prompt_sets, annotators, since, until, min_agreement}. A refusal is one
    sentence and creates no job."""

    def preview_job(method: str, base: str | None = None, reward: str | None = None, settings: dict | None = None,
                    selection: dict | None = None, request: gr.Request = None) -> dict:
        """Researchers: how many rows (pairs, rankings, prompts...) a job would train on,
        without making it; the settings and data are checked as for submit_job."""
        user = current_user(service, request, *STAFF)
        with user_error():
            preview = jobs.preview(job_views.job_request(method, base, reward, settings, selection, user.name))
        return {**job_views.jsonable(preview), "message": job_views.preview_sentence(preview)}

    def submit_job(method: str, base: str | None = None, reward: str | None = None, settings: dict | None = None,
                   selection: dict | None = None, request: gr.Request = None) -> dict:
        """Researchers: queue a training job (the server runs one at a time); returns its status."""
        user = current_user(service, request, *STAFF)
        with user_error():
            job_id = jobs.submit(job_views.job_request(method, base, reward, settings, selection, user.name))
            return job_views.job_status(jobs, job_id)

    def job_status(job_id: int, log_lines: int = job_views.LOG_LINES, request: gr.Request = None) -> dict:
        """Researchers: a job's status, step/total, progress (0-1), ETA, latest metrics and log tail."""
        current_user(service, request, *STAFF)
        with user_error():
            return job_views.job_status(jobs, int(job_id), max(0, int(log_lines)))

    def cancel_job(job_id: int, request: gr.Request = None) -> dict:
        """Researchers: cancel a queued job, or ask a running one to stop at its next step."""
        current_user(service, request, *STAFF)
        with user_error():
            message = jobs.cancel(int(job_id))
        return {"job_id": int(job_id), "message": message}

    def list_jobs(limit: int | None = 20, request: gr.Request = None) -> list[dict]:
        """Researchers: the jobs, newest first."""
        current_user(service, request, *STAFF)
        return job_views.job_list(jobs.list(int(limit) if limit is not None else None))

    def list_models(request: gr.Request) -> list[dict]:
        """Researchers: every model version with its lineage (parent, method, job) and metrics."""
        current_user(service, request, *STAFF)
        return job_views.model_list(service.wb.models())

    def promote_model(version: str, request: gr.Request = None) -> dict:
        """Researchers: make a policy version the active one (new comparisons come from it)."""
        current_user(service, request, *STAFF)
        with user_error():
            service.wb.promote(version)
        return {"name": version, "status": "active"}

    for endpoint in (preview_job, submit_job, job_status, cancel_job, list_jobs, list_models, promote_model):
        gr.api(endpoint, api_name=endpoint.__name__, concurrency_limit=None)
