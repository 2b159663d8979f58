"""Named API endpoints for scripts using `gradio_client`: the annotation loop exactly as
the page runs it, the researcher's queue controls, and training jobs and model versions
(`register_jobs`). Every endpoint reads the user from the login session and checks the
role on the server."""

from __future__ import annotations

import gradio as gr
from gradio import FileData

from app.context import AppContext
from app.session import REQUESTS, RESEARCH_SAMPLING, user_error
from app import job_views
from rlhf.auth import STAFF
from rlhf.collect.annotation import Item, Submission
from rlhf.compare.service import CompareError
from rlhf.limits import LIMITS, check_text, check_value


def check_names(**names) -> None:
    """Each name-like argument (versions, sets, methods, tokens; or each name of a list)
    within the name cap."""
    for what, value in names.items():
        for name in value if isinstance(value, (list, tuple)) else [value]:
            check_value(what.replace("_", " "), name, LIMITS.name_chars)


def declare(*endpoints, limits: dict = REQUESTS) -> None:
    """Name each endpoint after its function, with a finite concurrency limit."""
    for endpoint in endpoints:
        gr.api(endpoint, api_name=endpoint.__name__, **limits)


def uploaded_path(upload) -> str | None:
    """The server-side path of a file a client uploaded (Gradio moved it into its cache and
    refuses a path it did not receive), or None."""
    if upload is None:
        return None
    return str(upload["path"] if isinstance(upload, dict) else upload.path)


def item_payload(item: Item | None) -> dict:
    """The item as JSON, under `handout`: an opaque token to rank or skip it by (never the
    comparison's id). With the queue's suggestions on and the comparison scored, it also
    holds `suggestion`: {ranking, reward_version, note}, a reward model's ranking for the
    annotator to weigh, never a ranking submitted for them; otherwise the key is absent."""
    if item is None:
        return {"handout": None, "message": "No comparison is waiting for you right now."}
    payload = {
        "handout": item.handout,
        "prompt": item.prompt,
        "messages": item.messages,
        "letters": item.letters,
        "completions": dict(zip(item.letters, item.completions)),
        "guidelines_version": item.guidelines_version,
        "dimensions": list(item.dimensions),
        "progress": item.progress,
    }
    if item.suggestion:
        payload["suggestion"] = {**item.suggestion, "note": "A reward model's suggestion, not an answer: "
                                 "rank as you judge."}
    return payload


def register(ctx: AppContext) -> None:
    """Declare the endpoints inside the app's Blocks context."""

    def next_comparison(request: gr.Request) -> dict:
        """The next comparison for the logged-in annotator (claimed for them), or handout
        null when none is waiting."""
        user = ctx.user(request)
        with user_error():
            return item_payload(ctx.annotation.next_item(user))

    def submit_ranking(handout: str, ranking: str, seconds_spent: float | None = None,
                       labels: dict | None = None, ratings: dict | None = None, none_acceptable: bool = False,
                       better_answer: str | None = None, comment: str | None = None, fetch_next: bool = False,
                       request: gr.Request = None) -> dict:
        """Store the logged-in user's ranking, e.g. 'C > B = D > A', of the item handed to them
        (`handout` from next_comparison; nothing else is accepted). labels: {letter: {good, flag}};
        ratings: {letter: {dimension: 1-5}}. The time spent is the server's, from the hand-out;
        seconds_spent, if sent, is kept apart as client-reported. Submitting the same ranking
        twice stores it once. With fetch_next, the reply also hands over the next comparison
        ('next'), as the page does (it is then claimed for this user)."""
        user = ctx.user(request)
        with user_error():
            submission = Submission(handout, ranking, seconds_spent, labels, ratings, bool(none_acceptable),
                                    better_answer, comment)
            if not fetch_next:
                return ctx.annotation.submit(user, submission)
            result, item = ctx.annotation.submit_and_next(user, submission)
            return {**result, "next": item_payload(item)}

    def skip_comparison(handout: str, reason: str, request: gr.Request = None) -> dict:
        """Skip the item handed to you (`handout` from next_comparison) with a reason; it is
        not handed to this user again."""
        user = ctx.user(request)
        with user_error():
            check_text("reason", reason, LIMITS.text_chars)
            return ctx.annotation.skip(user, handout, reason)

    def progress(request: gr.Request) -> dict:
        """Done today, done in total, and what is waiting, for the logged-in user."""
        return ctx.annotation.progress(ctx.user(request))

    def queue_settings(overlap: int | None = None, prompt_sets: list[str] | None = None,
                       model_version: str | None = None, ready_target: int | None = None,
                       gold_rate: float | None = None, sources: list[dict] | None = None,
                       suggest: bool | None = None, selection: str | None = None,
                       reward_models: list[str] | None = None, candidates: int | None = None,
                       request: gr.Request = None) -> dict:
        """Researchers: change the queue (fields left null keep their value); returns it.
        sources: [{version, count, temperature?, top_p?}] ([] for all K from one version);
        suggest: show annotators the reward model's ranking as a suggestion; selection:
        'random', 'uncertain' (least sure first) or 'thompson' (K shown of `candidates`
        sampled, picked by double Thompson sampling); reward_models: one or two reward
        versions ([] for the newest)."""
        user = ctx.user(request, *STAFF)
        with user_error():
            check_names(model_version=model_version, selection=selection, prompt_sets=prompt_sets,
                        reward_models=reward_models)
            check_value("sources", sources, LIMITS.settings_chars)
        changes = {name: value for name, value in dict(
            overlap=overlap, prompt_sets=prompt_sets, model_version=model_version, ready_target=ready_target,
            gold_rate=gold_rate, sources=sources, suggest=suggest, selection=selection,
            reward_models=reward_models, candidates=candidates).items() if value is not None}
        with user_error():
            config = ctx.annotation.set_config(user, **changes)
        ctx.pregenerator.wake()  # generate or score for the new settings now
        return {**vars(config), "dimensions": list(config.dimensions), "generation": ctx.pregenerator.status()}

    def mark_gold(comparison_id: int, ranking: str | None, request: gr.Request = None) -> dict:
        """Researchers: make a comparison a gold item with its expected ranking (null to unmark)."""
        user = ctx.user(request, *STAFF)
        with user_error():
            check_text("ranking", ranking, LIMITS.ranking_chars)
            stored = ctx.annotation.mark_gold(user, int(comparison_id), ranking)
        return {"comparison_id": int(comparison_id), "gold": stored}  # canonical, as stored

    declare(next_comparison, submit_ranking, skip_comparison, progress, queue_settings, mark_gold)


def register_jobs(ctx: AppContext) -> None:
    """Researchers' training-job endpoints (declared inside the app's Blocks context).
    settings: {name: value} (config fields under TRL's names, or workbench options);
    selection: {prompt_sets, annotators, since, until, min_agreement}. A refusal is one
    sentence and creates no job."""

    def checked_request(method, base, reward, settings, selection, user_name: str, corpus=None):
        check_names(method=method, base=base, reward=reward)
        check_value("settings", settings, LIMITS.settings_chars)
        check_value("selection", selection, LIMITS.settings_chars)
        return job_views.job_request(method, base, reward, settings, selection, user_name, uploaded_path(corpus))

    def preview_job(method: str, base: str | None = None, reward: str | None = None, settings: dict | None = None,
                    selection: dict | None = None, corpus: FileData | None = None, request: gr.Request = None) -> dict:
        """Researchers: how many rows (pairs, rankings, prompts...) a job would train on,
        without making it; the settings and data are checked as for submit_job. `corpus`:
        the text file of a method that trains on one (pretrain), `handle_file(path)` in gradio_client."""
        user = ctx.user(request, *STAFF)
        with user_error():
            preview = ctx.jobs.preview(checked_request(method, base, reward, settings, selection, user.name, corpus))
        return {**job_views.jsonable(preview), "message": job_views.preview_sentence(preview)}

    def submit_job(method: str, base: str | None = None, reward: str | None = None, settings: dict | None = None,
                   selection: dict | None = None, corpus: FileData | None = None, request: gr.Request = None) -> dict:
        """Researchers: queue a training job (the server runs one at a time); returns its status.
        `corpus` as for preview_job."""
        user = ctx.user(request, *STAFF)
        with user_error():
            job_id = ctx.jobs.submit(checked_request(method, base, reward, settings, selection, user.name, corpus))
            return job_views.job_status(ctx.jobs, job_id)

    def job_status(job_id: int, log_lines: int = job_views.LOG_LINES, request: gr.Request = None) -> dict:
        """Researchers: a job's status, step/total, progress (0-1), ETA, latest metrics and log tail."""
        ctx.user(request, *STAFF)
        with user_error():
            return job_views.job_status(ctx.jobs, int(job_id), max(0, int(log_lines)))

    def cancel_job(job_id: int, request: gr.Request = None) -> dict:
        """Researchers: cancel a queued job, or ask a running one to stop at its next step."""
        ctx.user(request, *STAFF)
        with user_error():
            message = ctx.jobs.cancel(int(job_id))
        return {"job_id": int(job_id), "message": message}

    def list_jobs(limit: int | None = 20, request: gr.Request = None) -> list[dict]:
        """Researchers: the jobs, newest first."""
        ctx.user(request, *STAFF)
        return job_views.job_list(ctx.jobs.list(int(limit) if limit is not None else None))

    def list_models(request: gr.Request) -> list[dict]:
        """Researchers: every model version with its lineage (parent, method, job) and metrics."""
        ctx.user(request, *STAFF)
        return job_views.model_list(ctx.wb.models())

    def promote_model(version: str, request: gr.Request = None) -> dict:
        """Researchers: make a policy version the active one (new comparisons come from it)."""
        ctx.user(request, *STAFF)
        with user_error():
            check_names(version=version)
            ctx.wb.promote(version)
        return {"name": version, "status": "active"}

    declare(preview_job, submit_job, job_status, cancel_job, list_jobs, list_models, promote_model)


def register_compare(ctx: AppContext) -> None:
    """Researchers' endpoints for comparing versions (declared inside the app's Blocks
    context): side by side, blind arena battles (open one, vote, then the names are
    revealed), the leaderboard, the raw votes, and automatic evaluations. Completions are
    returned as text; a refusal is one sentence."""
    def compare_versions(version_a: str, version_b: str, prompt: str | None = None, prompt_id: int | None = None,
                         prompt_set: str | None = None, reward: str | None = None, max_new_tokens: int | None = None,
                         temperature: float | None = None, seed: int | None = None, request: gr.Request = None) -> dict:
        """Researchers: both versions answer one prompt (typed, a stored prompt id, or a random one of
        prompt_set): {prompt, a, b}, each answer {version, text, num_tokens, finish_reason, score}; score
        is the reward model's (null when no reward version is named)."""
        ctx.user(request, *STAFF)
        with user_error():
            check_names(version_a=version_a, version_b=version_b, prompt_set=prompt_set, reward=reward)
            check_text("prompt", prompt, LIMITS.prompt_chars)
            return job_views.jsonable(ctx.compare.side_by_side(version_a, version_b, prompt, prompt_id, prompt_set, reward,
                                                           max_new_tokens, temperature, seed))

    def arena_battle(version_a: str | None = None, version_b: str | None = None, prompt: str | None = None,
                     prompt_id: int | None = None, prompt_set: str | None = None,
                     max_new_tokens: int | None = None, request: gr.Request = None) -> dict:
        """Researchers: open a blind battle: {battle, prompt, a, b, chosen_by}, the two answers in the order
        shown and no names. Both versions named: that pair; neither: the least-played pair. Vote with
        arena_vote(battle, vote)."""
        user = ctx.user(request, *STAFF)
        with user_error():
            check_names(version_a=version_a, version_b=version_b, prompt_set=prompt_set)
            check_text("prompt", prompt, LIMITS.prompt_chars)
            return job_views.jsonable(ctx.compare.start_battle(user, version_a, version_b, prompt, prompt_id, prompt_set,
                                                           max_new_tokens))

    def arena_vote(battle: str, vote: str, request: gr.Request = None) -> dict:
        """Researchers: vote on your open battle (A, B, tie or both_bad); stored with you as the voter, and
        the names revealed: {battle_id, vote, model_a, model_b, voter}."""
        user = ctx.user(request, *STAFF)
        with user_error():
            check_names(battle=battle, vote=vote)
            return job_views.jsonable(ctx.compare.vote(user, battle, vote))

    def arena_leaderboard(rounds: int = 1000, request: gr.Request = None) -> dict:
        """Researchers: Bradley-Terry ratings with 95% bootstrap intervals (`rounds` resamples), the
        win-rate matrix {model: {opponent: rate}} (ties as half) and the votes per pair."""
        ctx.user(request, *STAFF)
        with user_error():
            rounds = int(rounds)
            if not 1 <= rounds <= 10_000:
                raise CompareError(f"rounds must be from 1 to 10000, not {rounds}.")
            board = ctx.compare.leaderboard(rounds=rounds)
            rates = ctx.compare.win_rates()
            return {"leaderboard": [job_views.jsonable(row) for row in board.to_dict("records")],
                    "win_rates": job_views.jsonable(rates.to_dict("index")),
                    "pairs": [job_views.jsonable(row) for row in ctx.compare.pair_counts().to_dict("records")]}

    def arena_battles(request: gr.Request) -> list[dict]:
        """Researchers: every stored vote, oldest first, with its voter, prompt and both completions."""
        ctx.user(request, *STAFF)
        return [job_views.jsonable(row) for row in ctx.compare.battles().to_dict("records")]

    def evaluate_versions(version_a: str, version_b: str, prompt_set: str | None = None, n: int = 16,
                          reward: str | None = None, reference: str | None = None, seed: int = 0,
                          max_new_tokens: int = 128, request: gr.Request = None) -> dict:
        """Researchers: evaluate A against B on the first n prompts of a prompt set (default 'default'):
        win rate under the reward model (default the newest), mean reward, length and KL from the
        reference (default 'base') of each; stored, and returned with its id."""
        user = ctx.user(request, *STAFF)
        with user_error():
            check_names(version_a=version_a, version_b=version_b, prompt_set=prompt_set, reward=reward,
                        reference=reference)
            return job_views.jsonable(ctx.compare.evaluate(version_a, version_b, prompt_set, n, reward, reference, seed,
                                                       max_new_tokens, created_by=user.name))

    def list_evaluations(version: str | None = None, limit: int | None = None, request: gr.Request = None) -> list[dict]:
        """Researchers: the stored evaluations (of one version when named), newest first."""
        ctx.user(request, *STAFF)
        with user_error():
            check_names(version=version)
        return [job_views.jsonable(row) for row in ctx.compare.evaluations(version, limit).to_dict("records")]

    declare(compare_versions, arena_battle, evaluate_versions, limits=RESEARCH_SAMPLING)
    declare(arena_vote, arena_leaderboard, arena_battles, list_evaluations)
