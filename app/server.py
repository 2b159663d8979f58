"""`rlhf serve`: the Gradio app, which owns the workbench's database while it runs."""

from __future__ import annotations

import json
import os
import signal

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline lab

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from app import api  # noqa: E402
from app.body_limit import BodyLimit  # noqa: E402
from app.tabs import annotate, compare, comparisons, data, queue, train  # noqa: E402
from rlhf.annotation import Annotation  # noqa: E402
from rlhf.auth import STAFF, authenticate, get_user  # noqa: E402
from rlhf import exports  # noqa: E402
from rlhf.compare import Compare  # noqa: E402
from rlhf.jobs import JobRunner, Jobs  # noqa: E402
from rlhf.limits import LIMITS  # noqa: E402
from rlhf.pregenerate import PreGenerator  # noqa: E402
from rlhf.reports import Reports  # noqa: E402
from rlhf.sampler_process import SamplerProcess  # noqa: E402
from rlhf.workbench import Workbench  # noqa: E402

TITLE = "RLHF Workbench"
STATIC = os.path.join(os.path.dirname(__file__), "static")


def build_app(wb: Workbench, service: Annotation, pregenerator: PreGenerator, jobs: Jobs,
              research: SamplerProcess | None = None) -> gr.Blocks:
    # one per app: the tab and the API share open battles; side by side, battles and
    # evaluations sample for seconds to minutes, so they run in `research`, a sampling
    # process of their own (pre-generation goes on in its own meanwhile)
    comparer = Compare(wb, sampler=research)
    # Gradio's copies of the files it serves (exports) go after the same hour as ours
    with gr.Blocks(title=TITLE, delete_cache=(300, LIMITS.export_ttl_s)) as app:
        with gr.Row():
            gr.Markdown(f"## {TITLE}")
            user_line = gr.Markdown(elem_id="user-line")
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
    return app.queue(default_concurrency_limit=LIMITS.request_concurrency)


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
    research = SamplerProcess()
    sweeper = exports.Sweeper(wb.home)
    app = build_app(wb, service, pregenerator, jobs, research)
    url = f"http://{host}:{port}"
    wb.home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    pregenerator.start()
    runner.start()
    sweeper.start()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(f"Serving the workbench at {url} (home {wb.home.root}); sign in there. Ctrl-C stops.", flush=True)
    try:
        with open(os.path.join(STATIC, "shortcuts.js"), encoding="utf-8") as script:
            shortcuts = script.read()
        app.launch(server_name=host, server_port=port, show_error=True, quiet=True,
                   auth=check_login(service), auth_message="Sign in to the RLHF Workbench.",
                   css_paths=[os.path.join(STATIC, "workbench.css")], head=f"<script>{shortcuts}</script>",
                   max_file_size=LIMITS.upload_bytes, allowed_paths=[str(wb.home.exports_dir)],
                   app_kwargs={"middleware": [Middleware(BodyLimit, max_bytes=LIMITS.body_bytes,
                                                         upload_bytes=LIMITS.upload_bytes)]})
    finally:
        sweeper.stop()
        runner.stop()
        pregenerator.stop()
        research.close()
        wb.home.server_file.unlink(missing_ok=True)
