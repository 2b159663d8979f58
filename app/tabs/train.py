"""Train tab (researchers): launch training jobs and watch them, the model versions with
their lineage, promotion.

Handlers first, layout last (`build`). Every handler checks the role on the server;
hiding the tab from annotators is only a convenience. A job runs in the server's job
runner, not in the page: a reloaded page picks up the newest running job again. Log
lines, errors and anything a worker wrote are shown as text, never as HTML.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict

import gradio as gr
import pandas as pd

from app.context import AppContext
from app.render import RenderedText
from app.session import REFUSALS, refusal, user_error, warning
from rlhf.compare import summaries
from app import job_views
from rlhf.auth import STAFF
from rlhf.limits import LIMITS, check_text, check_value
from rlhf.collect.reports import Reports
from rlhf.jobs.service import JobRequest
from rlhf.train.methods import METHODS, method
from rlhf.versions import active_policy, versions_of

DEFAULT_METHOD = "dpo"
NEWEST_REWARD = "(the newest reward model)"
FAST_SECONDS, IDLE_SECONDS = 2.0, 10.0  # refresh while a job is queued or running / otherwise
JOBS_SHOWN = 100                        # the newest jobs in the table and the job chooser
SETTINGS = job_views.all_settings()     # every setting any method shows: one widget each
KEYS = list(SETTINGS)
FROM_DATA = job_views.decided_by_data()


# -- handlers -----------------------------------------------------------------------


class ViewedJobs:
    """Which job each open page (Gradio session) shows, kept on the server.

    A timer tick carries the job box's value from the moment it fired: one fired just
    before a launch answered would switch the view back to the previous job. So every
    choice (a launch, the job box, the table, opening the tab) is recorded here with a
    generation number; a tick shows the recorded job and drops its answer when a choice
    came in while it ran. Only the newest `size` pages are remembered."""

    def __init__(self, size: int = 256):
        self._views: OrderedDict[str, tuple[int | None, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def choose(self, page: str, job_id: int | None) -> None:
        with self._lock:
            generation = self._views.pop(page, (None, 0))[1] + 1
            self._views[page] = (job_id, generation)
            while len(self._views) > self._size:
                self._views.popitem(last=False)

    def current(self, page: str) -> tuple[int | None, int]:
        """(the recorded job or None, its generation)."""
        with self._lock:
            return self._views.get(page, (None, 0))


def setting_info(setting: job_views.Setting) -> str:
    if setting.from_data:
        return f"{setting.help} (blank: set from the data when the job starts, e.g. 60 pairs: 3 epochs, lr 2e-4)"
    default = repr(setting.default) if setting.kind == "str" else setting.default
    return f"{setting.help} (default {default})"


def shown_value(setting: job_views.Setting):
    """What a setting's field holds before the user types: blank where the data decides
    (those fields are text boxes: a number field cannot be blank)."""
    if setting.key in FROM_DATA:
        return "" if setting.from_data else str(setting.default)
    return setting.default


def method_changed(name: str):
    """Show the chosen method's settings with its defaults, the reward model only for the
    methods that use one, and the corpus upload instead of the data selection for those
    that train on a corpus (nothing is read from the store: no role to check)."""
    spec = method(name)
    shown = {setting.key: setting for setting in job_views.method_settings(name)}
    widgets = [gr.update(visible=key in shown, value=shown_value(shown.get(key, SETTINGS[key])),
                         info=setting_info(shown.get(key, SETTINGS[key])))
               for key in KEYS]
    config_class = spec.config_class.rpartition(".")[2]
    on_corpus = spec.data == "corpus"
    return [job_views.method_help(name), gr.update(visible=spec.needs_reward),
            gr.update(label=f"More settings: key=value lines, training fields of {config_class}"),
            gr.update(visible=on_corpus), gr.update(visible=not on_corpus), *widgets]


def _version_choices(frame: pd.DataFrame, base, reward):
    policies = versions_of(frame, "policy")
    active = active_policy(frame)
    rewards = [NEWEST_REWARD, *reversed(versions_of(frame, "reward"))]
    promotable = [name for name in policies if name != active]
    return [gr.update(choices=policies, value=base if base in policies else active),
            gr.update(choices=rewards, value=reward if reward in rewards else NEWEST_REWARD),
            gr.update(choices=promotable, value=None)]


def _request(user_name: str, chosen_method, base, reward, prompt_sets, annotators, rounds, since, until,
             min_agreement, more, corpus, values) -> tuple[JobRequest, dict]:
    """(the job request, its settings) from the form: the settings that differ from the
    method's defaults, then the More settings lines (which win); a method that trains on a
    corpus gets the uploaded file and no selection (its widgets are hidden then), the
    others no corpus. Texts over their caps are refused before anything parses them."""
    for what, text, cap in (("'since' date", since, LIMITS.name_chars), ("'until' date", until, LIMITS.name_chars),
                            ("More settings", more, LIMITS.settings_chars)):
        check_text(what, text, cap)
    check_value("settings", list(values), LIMITS.settings_chars)
    settings = job_views.changed_settings(chosen_method, dict(zip(KEYS, values)))
    settings.update(job_views.parse_more_settings(more))
    selection = {"prompt_sets": prompt_sets or [], "annotators": annotators or [],
                 "rounds": [int(number) for number in rounds or []],
                 "since": (since or "").strip() or None, "until": (until or "").strip() or None,
                 "min_agreement": float(min_agreement or 0.0)}
    if method(chosen_method).data == "corpus":
        selection = {}
    else:
        corpus = None
    reward = None if reward in (None, NEWEST_REWARD) else reward
    return job_views.job_request(chosen_method, base, reward, settings, selection, user_name, corpus), settings


def preview_job(ctx: AppContext, chosen_method, base, reward, prompt_sets, annotators, rounds,
                since, until, min_agreement, more, corpus, values, request: gr.Request) -> str:
    """How much the selection (or the corpus) yields, or why the job would be refused (one sentence)."""
    user = ctx.user(request, *STAFF)
    try:
        job, settings = _request(user.name, chosen_method, base, reward, prompt_sets, annotators, rounds, since, until,
                                 min_agreement, more, corpus, values)
        preview = ctx.jobs.preview(job)
    except REFUSALS as error:
        return f"Refused: {error}"
    changed = ", ".join(f"{key}={value}" for key, value in settings.items())
    return job_views.preview_sentence(preview) + (f" Settings changed: {changed}." if changed else " Default settings.")


def launch_job(ctx: AppContext, chosen_method, base, reward, prompt_sets, annotators, rounds,
               since, until, min_agreement, more, corpus, values, request: gr.Request):
    """Queue the job as the signed-in user; returns (status line, the job to watch or None)."""
    user = ctx.user(request, *STAFF)
    try:
        job, _ = _request(user.name, chosen_method, base, reward, prompt_sets, annotators, rounds, since, until,
                          min_agreement, more, corpus, values)
        job_id = ctx.jobs.submit(job)
    except REFUSALS as error:
        warning(str(error))
        return f"Refused: {error}", None
    rows = ctx.jobs.get(job_id)["spec"].get("rows")
    return f"Queued job {job_id} ({chosen_method} on {rows} rows); it starts when the runner is free.", job_id


def progress_html(status: dict | None) -> str:
    """A progress bar from numbers only (nothing a worker wrote goes into this HTML)."""
    if not status:
        return '<div id="train-progress-bar" class="train-progress"><span>No job selected.</span></div>'
    step, total = int(status.get("step") or 0), status.get("total")
    state = html.escape(str(status["status"]))
    if total:
        total = int(total)
        done = total if status["status"] == "succeeded" else min(step, total)
        label = f"{done}/{total} steps · {round(100 * done / total)}%"
        bar = f'<progress max="{total}" value="{done}"></progress>'
    else:
        label, bar = f"step {step}", "<progress></progress>" if status["status"] == "running" else ""
    eta = f" · ETA {html.escape(status['eta'])}" if status.get("eta") else ""
    return (f'<div id="train-progress-bar" class="train-progress" data-state="{state}">{bar}'
            f"<span>{label}{eta} · {state}</span></div>")


def _job_id(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None  # typed into the job box: not a job id


def watch(ctx: AppContext, job_id, chosen_metrics, seen: dict | None, request: gr.Request,
          pick_default: bool = False):
    """Everything the tab shows about jobs and versions. `seen` remembers what the page
    shows already, so a quiet tick sends nothing new (and a log being read does not jump).
    With `pick_default` (or no job chosen) the newest running job is chosen."""
    ctx.user(request, *STAFF)
    seen = dict(seen or {})
    frame = ctx.jobs.list(JOBS_SHOWN)
    job_id = None if pick_default else _job_id(job_id)
    status = None
    if job_id is not None:
        try:
            status = job_views.job_status(ctx.jobs, job_id, job_views.LOG_LINES)
        except REFUSALS:  # gone, or never was
            job_id = None
    if job_id is None:
        job_id = job_views.default_job(frame)
        status = job_views.job_status(ctx.jobs, job_id, job_views.LOG_LINES) if job_id is not None else None
    metrics = ctx.jobs.metrics(job_id) if job_id is not None else pd.DataFrame(columns=["step", "name", "value"])
    names = job_views.metric_names(metrics)
    if seen.get("job") != job_id:
        chosen_metrics = []  # another job: its own key metrics
    chosen = [name for name in (chosen_metrics or []) if name in names]

    def fresh(key: str, value) -> bool:
        """Whether `value` differs from what the page was last sent under `key`."""
        changed = seen.get(key) != value
        seen[key] = value
        return changed

    jobs_changed = fresh("jobs", job_views.jobs_signature(frame))
    plots_changed = fresh("plots", [job_id, len(metrics), status and status["status"], chosen])
    line = job_views.status_sentence(status) if status else "No jobs yet: launch one above."
    bar, log = progress_html(status), (status or {}).get("log_tail", "")
    seen["job"] = job_id
    losses, others = job_views.plot_frames(metrics, chosen)
    guarded = job_views.guard_frame(metrics)
    active = job_views.anything_active(frame)
    return [
        gr.update(choices=job_views.job_choices(frame), value=job_id) if jobs_changed or pick_default
        else gr.update(value=job_id),
        line if fresh("line", line) else gr.skip(),
        bar if fresh("bar", bar) else gr.skip(),
        losses if plots_changed else gr.skip(),
        others if plots_changed else gr.skip(),
        guarded if plots_changed else gr.skip(),
        gr.update(choices=names, value=chosen) if plots_changed else gr.skip(),
        log if fresh("log", log) else gr.skip(),
        job_views.jobs_table(frame) if jobs_changed else gr.skip(),
        versions_table(ctx.wb) if jobs_changed else gr.skip(),
        gr.update(interactive=bool(status) and status["status"] in job_views.ACTIVE),
        gr.Timer(FAST_SECONDS if active else IDLE_SECONDS, active=True),
        seen,
    ]


def open_tab(ctx: AppContext, base, reward, job_id, chosen_metrics, request: gr.Request):
    """The tab was opened (or the page reloaded): fresh choices, and the newest running job."""
    ctx.user(request, *STAFF)
    choices = Reports(ctx.wb).choices()
    return [*_version_choices(ctx.wb.models(), base, reward),
            gr.update(choices=choices["prompt_sets"]), gr.update(choices=choices["annotators"]),
            gr.update(choices=[(f"round {number} ({policy})", number) for number, policy in choices["rounds"]]),
            *watch(ctx, job_id, chosen_metrics, None, request, pick_default=True)]


def cancel_job(ctx: AppContext, job_id, request: gr.Request) -> str:
    ctx.user(request, *STAFF)
    if _job_id(job_id) is None:
        raise refusal("Choose a job to cancel.")
    with user_error():
        return ctx.jobs.cancel(_job_id(job_id))


def versions_table(wb, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The models table: every version, its lineage and its newest automatic evaluation."""
    return job_views.models_table(wb.models() if frame is None else frame, summaries.version_summaries(wb))


def promote_version(ctx: AppContext, name, request: gr.Request):
    ctx.user(request, *STAFF)
    if not name:
        raise refusal("Choose a policy version to promote.")
    with user_error():
        ctx.wb.promote(name)
    frame = ctx.wb.models()
    return [f"{name} is now the active policy: new comparisons come from it.",
            versions_table(ctx.wb, frame), *_version_choices(frame, name, None)[::2]]


def add_prompt_version(ctx: AppContext, name, parent, system_prompt, template, request: gr.Request):
    """Register a prompt version (`Workbench.add_prompt_version`): the parent's weights plus
    the texts, which are stored and shown as text only."""
    ctx.user(request, *STAFF)
    with user_error():
        version = ctx.wb.add_prompt_version(name, parent, system_prompt or None, template or None)
    frame = ctx.wb.models()
    return [f"Registered {version.name}: the weights of {version.parent} with the prompt given.",
            versions_table(ctx.wb, frame), *_version_choices(frame, None, None)[::2]]


def add_reward_combination(ctx: AppContext, name, spec, request: gr.Request):
    """Register a combination of reward versions (`Workbench.add_reward_combination`):
    weighted, or gated as Llama 2; it can then be chosen wherever a reward model is."""
    ctx.user(request, *STAFF)
    with user_error():
        check_text("combination", spec, LIMITS.settings_chars)
        version = ctx.wb.add_reward_combination(name, spec)
    frame = ctx.wb.models()
    reward = _version_choices(frame, None, None)[1]
    return [f"Registered {version.name}: the reward {frame.set_index('name').loc[version.name, 'objective']}.",
            versions_table(ctx.wb, frame), reward]


def job_from_table(frame: pd.DataFrame, event: gr.SelectData):
    """A click on a row of the jobs table watches that job."""
    row = event.row_value if getattr(event, "row_value", None) else None
    if not row:
        try:
            row = list(frame.iloc[event.index[0]])
        except (IndexError, TypeError, AttributeError):
            return gr.skip()
    try:
        return int(row[0])
    except (TypeError, ValueError):
        return gr.skip()


# -- layout ---------------------------------------------------------------------------


def _setting_widget(key: str, default_method: dict[str, job_views.Setting]):
    setting = default_method.get(key, SETTINGS[key])
    value = shown_value(setting)
    common = dict(label=setting.key, info=setting_info(setting), visible=key in default_method,
                  elem_id=f"setting-{key}", min_width=180)
    if setting.choices:
        return gr.Dropdown(list(setting.choices), value=value, **common)
    if key in FROM_DATA:
        return gr.Textbox(value=value, placeholder="from the data", max_length=LIMITS.name_chars, **common)
    if setting.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if setting.kind == "int":
        return gr.Number(value=value, precision=0, **common)
    if setting.kind == "float":
        return gr.Number(value=value, **common)
    return gr.Textbox(value=value, max_length=LIMITS.settings_chars, **common)


def build(ctx: AppContext) -> gr.Tab:
    defaults = {s.key: s for s in job_views.method_settings(DEFAULT_METHOD)}
    first = method_changed(DEFAULT_METHOD)
    with gr.Tab("Train", id="train", visible=False) as tab:
        gr.Markdown("### Launch a training job")
        with gr.Row():
            chosen_method = gr.Dropdown(list(METHODS), value=DEFAULT_METHOD, label="Method", elem_id="train-method")
            base = gr.Dropdown([], label="Base (parent) policy version", elem_id="train-base")
            reward = gr.Dropdown([NEWEST_REWARD], value=NEWEST_REWARD, label="Reward model",
                                 visible=method(DEFAULT_METHOD).needs_reward, elem_id="train-reward")
        help_line = gr.Markdown(first[0], elem_id="train-method-help")
        gr.Markdown("#### Data")
        on_corpus = method(DEFAULT_METHOD).data == "corpus"
        corpus = gr.File(label="Corpus file: .txt or .md (one document), JSONL with a text field or Parquet with a"
                         " text column (a document per line or row), each may be .gz", type="filepath",
                         file_types=[".txt", ".md", ".jsonl", ".json", ".parquet", ".gz"], visible=on_corpus,
                         height=90, elem_id="train-corpus")
        with gr.Row(visible=not on_corpus, elem_id="train-selection") as selection_row:
            prompt_sets = gr.Dropdown([], multiselect=True, label="Prompt sets (none chosen: all)")
            annotators = gr.Dropdown([], multiselect=True, label="Annotators (none chosen: all)")
            rounds = gr.Dropdown([], multiselect=True, label="Rounds (none chosen: all)")
            since = gr.Textbox(label="Since (YYYY-MM-DD)", placeholder="any date", max_length=LIMITS.name_chars)
            until = gr.Textbox(label="Until (YYYY-MM-DD)", placeholder="any date", max_length=LIMITS.name_chars)
            min_agreement = gr.Slider(0, 1, value=0, step=0.05, label="Minimum agreement",
                                      info="comparisons whose annotators agree less are left out")
        gr.Markdown("#### Settings (the method's defaults; only changed values are sent; blank ones are set from the data)")
        with gr.Row(elem_id="train-settings"):
            widgets = [_setting_widget(key, defaults) for key in KEYS]
        more = gr.Textbox(lines=3, label=first[2]["label"], elem_id="train-more",
                          placeholder="max_steps=50\nweight_decay=0.01", max_length=LIMITS.settings_chars)
        with gr.Row():
            preview_button = gr.Button("Preview data", elem_id="train-preview")
            launch_button = gr.Button("Launch", variant="primary", elem_id="train-launch")
        launch_note = RenderedText(elem_id="train-status")

        gr.Markdown("### Jobs")
        with gr.Row():
            job_choice = gr.Dropdown([], label="Job", allow_custom_value=True, elem_id="train-job")
            cancel_button = gr.Button("Cancel job", variant="stop", interactive=False, scale=0,
                                      elem_id="train-cancel")
            refresh_button = gr.Button("Refresh", scale=0)
        job_line = RenderedText(elem_id="train-job-line")
        progress = gr.HTML(progress_html(None), elem_id="train-progress")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="value", color="name", label="Loss",
                                    elem_id="train-loss-plot")
            metrics_plot = gr.LinePlot(x="step", y="value", color="name", label="Metrics",
                                       elem_id="train-metrics-plot")
            guard_plot = gr.LinePlot(x="step", y="value", color="name", elem_id="train-guard-plot",
                                     label="Guardrails: held-out accuracy and KL to the parent (start and end)")
        metric_choice = gr.Dropdown([], multiselect=True, allow_custom_value=True, elem_id="train-metric-names",
                                    label="Metrics to plot (none chosen: the method's key ones)")
        log_box = gr.Textbox(label=f"Log (last {job_views.LOG_LINES} lines)", lines=12, max_lines=12,
                             interactive=False, autoscroll=True, elem_id="train-log")
        jobs_table = gr.Dataframe(label="Jobs (newest first; click a row to watch it)", interactive=False,
                                  max_height=300, elem_id="train-jobs")

        gr.Markdown("### Model versions")
        models_table = gr.Dataframe(label="Versions and their lineage (newest first)", interactive=False,
                                    max_height=360, elem_id="train-models")
        with gr.Row():
            promote_choice = gr.Dropdown([], label="Policy version to make active", elem_id="train-promote-version")
            promote_button = gr.Button("Promote", scale=0, elem_id="train-promote")
        promote_note = RenderedText(elem_id="train-promote-status")
        with gr.Accordion("Add a prompt version (a parent's weights plus a written prompt, no training)",
                          open=False, elem_id="train-add-prompt"):
            with gr.Row():
                prompt_name = gr.Textbox(label="Name", max_length=LIMITS.name_chars, elem_id="train-prompt-name")
                prompt_parent = gr.Dropdown([], label="Parent policy version", elem_id="train-prompt-parent")
            prompt_system = gr.Textbox(label="System prompt", lines=3, max_length=LIMITS.system_prompt_chars,
                                       elem_id="train-prompt-system")
            prompt_template = gr.Textbox(label="Template (the user's prompt goes at {prompt}; optional)",
                                         max_length=LIMITS.system_prompt_chars, elem_id="train-prompt-template")
            prompt_button = gr.Button("Add prompt version", scale=0, elem_id="train-prompt-add")
            prompt_note = RenderedText(elem_id="train-prompt-status")
        with gr.Accordion("Combine reward models (weighted, or gated as Llama 2's helpfulness and safety models)",
                          open=False, elem_id="train-combine"):
            with gr.Row():
                combine_name = gr.Textbox(label="Name", max_length=LIMITS.name_chars, elem_id="train-combine-name")
                combine_spec = gr.Textbox(label="Combination", max_length=LIMITS.settings_chars,
                                          placeholder="helpfulness-3*0.7 + safety-4*0.3   or"
                                          "   gate:safety=safety-4,helpfulness=helpfulness-3,threshold=-1.7",
                                          elem_id="train-combine-spec")
            combine_button = gr.Button("Add combination", scale=0, elem_id="train-combine-add")
            combine_note = RenderedText(elem_id="train-combine-status")
        timer = gr.Timer(FAST_SECONDS, active=False)
        seen = gr.State({})

        form = [chosen_method, base, reward, prompt_sets, annotators, rounds, since, until, min_agreement, more, corpus]
        watched = [job_choice, job_line, progress, loss_plot, metrics_plot, guard_plot, metric_choice, log_box,
                   jobs_table, models_table, cancel_button, timer, seen]

        views = ViewedJobs()

        def shown(request: gr.Request, outputs: list) -> list:
            """Record the job a view shows (the `seen` state, last, holds it) for the ticks."""
            views.choose(request.session_hash, outputs[-1]["job"])
            return outputs

        # the request comes first: Gradio cannot pass it after *values
        def on_open(request: gr.Request, base_value, reward_value, job_id, chosen):
            outputs = open_tab(ctx, base_value, reward_value, job_id, chosen, request)
            parents = gr.update(choices=outputs[0]["choices"])   # the policies, as the base's choices
            return [*outputs[:-len(watched)], *shown(request, outputs[-len(watched):]), parents]

        def on_method(name):
            return method_changed(name)

        def on_preview(request: gr.Request, *values):
            return preview_job(ctx, *values[: len(form)], values[len(form):], request)

        def on_launch(request: gr.Request, chosen, seen_now, *values):
            note, job_id = launch_job(ctx, *values[: len(form)], values[len(form):], request)
            if job_id is None:
                return [note, *[gr.skip()] * len(watched)]
            return [note, *shown(request, watch(ctx, job_id, chosen, None, request))]

        def on_watch(request: gr.Request, job_id, chosen, seen_now):
            return shown(request, watch(ctx, job_id, chosen, seen_now, request))

        def on_tick(request: gr.Request, job_id, chosen, seen_now):
            recorded, generation = views.current(request.session_hash)
            outputs = watch(ctx, job_id if recorded is None else recorded, chosen, seen_now, request)
            if views.current(request.session_hash)[1] != generation:
                return [gr.skip()] * len(watched)  # a newer choice answered meanwhile
            return outputs

        def on_refresh(request: gr.Request, job_id, chosen):
            return shown(request, watch(ctx, job_id, chosen, None, request))

        def on_cancel(job_id, request: gr.Request):
            return cancel_job(ctx, job_id, request)

        def on_promote(name, request: gr.Request):
            return promote_version(ctx, name, request)

        def on_add_prompt(name, parent, system_prompt, template, request: gr.Request):
            note, table, base_update, promote_update = add_prompt_version(ctx, name, parent, system_prompt, template,
                                                                          request)
            return [note, table, base_update, promote_update, gr.update(choices=base_update["choices"])]

        def on_combine(name, spec, request: gr.Request):
            return add_reward_combination(ctx, name, spec, request)

        private = dict(api_visibility="private")
        quiet = dict(api_visibility="private", show_progress="hidden")
        tab.select(on_open, [base, reward, job_choice, metric_choice],
                   [base, reward, promote_choice, prompt_sets, annotators, rounds, *watched, prompt_parent], **private)
        chosen_method.change(on_method, chosen_method, [help_line, reward, more, corpus, selection_row, *widgets],
                             **private)
        preview_button.click(on_preview, [*form, *widgets], launch_note, **private)
        timer.tick(on_tick, [job_choice, metric_choice, seen], watched, **quiet)
        launch_button.click(on_launch, [metric_choice, seen, *form, *widgets], [launch_note, *watched], **private)
        gr.on([job_choice.input, metric_choice.input], on_watch, [job_choice, metric_choice, seen], watched, **quiet)
        refresh_button.click(on_refresh, [job_choice, metric_choice], watched, **private)
        jobs_table.select(job_from_table, jobs_table, job_choice, **private).then(
            on_watch, [job_choice, metric_choice, seen], watched, **quiet)
        cancel_button.click(on_cancel, job_choice, launch_note, **private).then(
            on_watch, [job_choice, metric_choice, seen], watched, **quiet)
        promote_button.click(on_promote, promote_choice, [promote_note, models_table, base, promote_choice],
                             **private)
        prompt_button.click(on_add_prompt, [prompt_name, prompt_parent, prompt_system, prompt_template],
                            [prompt_note, models_table, base, promote_choice, prompt_parent], **private)
        combine_button.click(on_combine, [combine_name, combine_spec], [combine_note, models_table, reward], **private)
    return tab
