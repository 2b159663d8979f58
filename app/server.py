"""`rlhf serve`: the Gradio app, which owns the workbench's database while it runs."""

from __future__ import annotations

import json
import os
import signal

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline lab

import gradio as gr  # noqa: E402

from app import api, headers  # noqa: E402
from app.render import RenderedText  # noqa: E402
from app.tabs import annotate, compare, comparisons, data, queue, train  # noqa: E402
from rlhf.annotation import Annotation  # noqa: E402
from rlhf.auth import STAFF, authenticate, get_user  # noqa: E402
from rlhf.compare import Compare  # noqa: E402
from rlhf.jobs import JobRunner, Jobs  # noqa: E402
from rlhf.pregenerate import PreGenerator  # noqa: E402
from rlhf.reports import Reports  # noqa: E402
from rlhf.workbench import Workbench  # noqa: E402

TITLE = "RLHF Workbench"
STATIC = os.path.join(os.path.dirname(__file__), "static")


def build_app(wb: Workbench, service: Annotation, pregenerator: PreGenerator, jobs: Jobs) -> gr.Blocks:
    # one per app: the tab and the API share open battles and loaded models; evaluations
    # sample for minutes, so they run in the pre-generator's sampling process
    comparer = Compare(wb, measurer=pregenerator.sampler.evaluate)
    with gr.Blocks(title=TITLE) as app:
        with gr.Row():
            gr.Markdown(f"## {TITLE}")
            user_line = RenderedText(elem_id="user-line")
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tabs():
            load_item, item_outputs = annotate.build(service, pregenerator)
            research_tabs = [queue.build(service, pregenerator), data.build(service, Reports(wb), pregenerator),
                             comparisons.build(service), train.build(service, jobs), compare.build(service, comparer)]
        api.register(service, pregenerator)
        api.register_jobs(service, jobs)
        api.register_compare(service, comparer)

        def who(request: gr.Request):
            """Who is signed in; researchers' tabs are shown to researchers and admins (the
            handlers behind them check the role again on every call)."""
            user = get_user(wb.store, request.username)
            staff = user is not None and user.role in STAFF
            line = f"Signed in as **{user.name}** ({user.role})" if user else ""
            return [line, *[gr.update(visible=staff) for _ in research_tabs]]

        app.load(who, None, [user_line, *research_tabs], api_visibility="private")
        app.load(load_item, None, item_outputs, api_visibility="private")
    return app


def check_login(service: Annotation):
    def login(name: str, password: str) -> bool:
        return authenticate(service.wb.store, name, password) is not None
    return login


def _stop_on_sigterm(signum, frame):
    """A service manager's stop is treated like Ctrl-C, so the clean-up below runs."""
    raise KeyboardInterrupt


def serve(wb: Workbench, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve until interrupted; server.json in the home tells other processes where."""
    service = Annotation(wb)
    pregenerator = PreGenerator(service)
    jobs = Jobs(wb.home, wb.store)
    runner = JobRunner(jobs)
    app = build_app(wb, service, pregenerator, jobs)
    app.queue(default_concurrency_limit=16)
    url = f"http://{host}:{port}"
    wb.home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    pregenerator.start()
    runner.start()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(f"Serving the workbench at {url} (home {wb.home.root}); sign in there. Ctrl-C stops.", flush=True)
    try:
        with open(os.path.join(STATIC, "shortcuts.js"), encoding="utf-8") as script:
            shortcuts = script.read()
        app.launch(server_name=host, server_port=port, show_error=True, quiet=True,
                   auth=check_login(service), auth_message="Sign in to the RLHF Workbench.",
                   css_paths=[os.path.join(STATIC, "workbench.css")], head=f"<script>{shortcuts}</script>",
                   app_kwargs={"middleware": headers.middleware()})  # CSP and friends on every response
    finally:
        runner.stop()
        pregenerator.stop()
        wb.home.server_file.unlink(missing_ok=True)
