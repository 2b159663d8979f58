"""`rlhf serve`: the Gradio app, which owns the workbench's database while it runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline lab

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from app import api, headers  # noqa: E402
from app.body_limit import BodyLimit  # noqa: E402
from app.context import AppContext  # noqa: E402
from app.render import RenderedText  # noqa: E402
from app.tabs import annotate, compare, comparisons, data, queue, train, users  # noqa: E402
from rlhf.auth import STAFF, AccountSettings, PermissionDenied, session_user  # noqa: E402
from rlhf.jobs.runner import JobRunner  # noqa: E402
from rlhf.limits import LIMITS  # noqa: E402
from rlhf.collect.sampler_process import SamplerProcess  # noqa: E402
from rlhf.collect.workbench import Workbench  # noqa: E402

log = logging.getLogger(__name__)

TITLE = "RLHF Workbench"
# A service manager's stop (SIGTERM) ends the server within this many seconds, whoever is
# connected and whatever runs: each part below gets a bounded share, the rest is cut off.
STOP_SECONDS = 8
JOB_STOP_GRACE_SECONDS = 4   # a running job's worker: SIGTERM, SIGKILL after this
SAMPLER_STOP_SECONDS = 2     # the sampling child: asked, then terminated
STATIC = os.path.join(os.path.dirname(__file__), "static")


def build_app(ctx: AppContext) -> gr.Blocks:
    # Gradio's copies of the files it serves (exports) go after the same hour as ours
    with gr.Blocks(title=TITLE, delete_cache=(300, LIMITS.export_ttl_s)) as app:
        with gr.Row():
            gr.Markdown(f"## {TITLE}")
            user_line = RenderedText(elem_id="user-line")
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tabs():
            load_item, item_outputs = annotate.build(ctx)
            research_tabs = [queue.build(ctx), data.build(ctx), comparisons.build(ctx), train.build(ctx),
                             compare.build(ctx)]
            _, users_tab = users.build(ctx)
        api.register(ctx)
        api.register_jobs(ctx)
        api.register_compare(ctx)

        def who(request: gr.Request):
            """Who is signed in; researchers' tabs are shown to researchers and admins (the
            handlers behind them check the role again on every call)."""
            try:
                user = session_user(ctx.wb.store, request.username)
            except PermissionDenied as refused:  # disabled, or must choose a new password first
                return [str(refused), *[gr.update(visible=False) for _ in research_tabs], gr.update(visible=False)]
            line = f"Signed in as **{user.name}** ({user.role})"
            return [line, *[gr.update(visible=user.role in STAFF) for _ in research_tabs],
                    gr.update(visible=user.role == "admin")]

        app.load(who, None, [user_line, *research_tabs, users_tab], api_visibility="private")
        app.load(load_item, None, item_outputs, api_visibility="private")
    return app.queue(default_concurrency_limit=LIMITS.request_concurrency)


def _gradio_login_refused(name: str, password: str) -> bool:
    """Given to Gradio as `auth` so that it asks for a sign-in at all; never called, since
    SignIn.install puts our throttled /login route in place of the one that would call it."""
    return False


def _stop_within(seconds: float, app: gr.Blocks, runner: JobRunner, samplers: list[Callable[..., None]],
                 server_file) -> None:
    """Stop everything at once, each part bounded: Gradio closes its streams (heartbeats,
    queue) instead of waiting for browsers and API clients to leave; a running job's worker
    gets a short grace; each sampling child (`samplers`: their stop functions) is terminated
    if busy. Whatever still hangs when
    `seconds` have passed (a handler stuck in a long call, say) is cut off by a hard exit:
    what was committed is in the database's log all the same."""
    def cut_off() -> None:
        log.warning("The server did not stop within %s s; exiting now.", seconds)
        server_file.unlink(missing_ok=True)
        os._exit(1)

    watchdog = threading.Timer(seconds, cut_off)
    watchdog.daemon = True
    watchdog.start()
    stoppers = [threading.Thread(target=runner.stop, kwargs={"grace": JOB_STOP_GRACE_SECONDS}, daemon=True),
                *[threading.Thread(target=stop, kwargs={"timeout": SAMPLER_STOP_SECONDS}, daemon=True)
                  for stop in samplers]]
    for stopper in stoppers:
        stopper.start()
    deadline = time.monotonic() + seconds
    app.close(verbose=False)
    for stopper in stoppers:
        stopper.join(max(0.0, deadline - time.monotonic()))


def serve(wb: Workbench, host: str = "127.0.0.1", port: int = 7860,
          accounts: AccountSettings = AccountSettings()) -> None:
    """Serve until interrupted; server.json in the home tells other processes where."""
    # side by side, battles and evaluations sample for seconds to minutes, so they run in a
    # sampling process of their own (pre-generation goes on in its own meanwhile)
    ctx = AppContext.create(wb, research=SamplerProcess(), accounts=accounts)
    app = build_app(ctx)
    url = f"http://{host}:{port}"
    wb.home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    ctx.pregenerator.start()
    ctx.runner.start()
    ctx.sweeper.start()
    stopping = threading.Event()  # set by SIGTERM (a service manager) or SIGINT (Ctrl-C)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        with open(os.path.join(STATIC, "shortcuts.js"), encoding="utf-8") as script:
            shortcuts = script.read()
        # CSP and friends on every response, the 413 included
        middleware = [*headers.middleware(),
                      Middleware(BodyLimit, max_bytes=LIMITS.body_bytes, upload_bytes=LIMITS.upload_bytes),
                      ctx.sign_in.gate()]
        app.launch(server_name=host, server_port=port, show_error=True, quiet=True, prevent_thread_lock=True,
                   auth=_gradio_login_refused, auth_message=ctx.sign_in.rules(),
                   css_paths=[os.path.join(STATIC, "workbench.css")], head=f"<script>{shortcuts}</script>",
                   max_file_size=LIMITS.upload_bytes, allowed_paths=[str(wb.home.exports_dir)],
                   app_kwargs={"middleware": middleware})
        ctx.sign_in.install(app.server_app)
        print(f"Serving the workbench at {url} (home {wb.home.root}); sign in there. Ctrl-C stops.", flush=True)
        while not stopping.is_set():
            time.sleep(0.2)
        print("Stopping the workbench.", flush=True)
    finally:
        ctx.sign_in.close()
        ctx.sweeper.stop()
        _stop_within(STOP_SECONDS, app, ctx.runner, [ctx.pregenerator.stop, ctx.research.close], wb.home.server_file)
        wb.home.server_file.unlink(missing_ok=True)
    _exit_without_teardown(wb)


def _exit_without_teardown(wb: Workbench) -> None:
    """`rlhf serve` is a process of its own with nothing left to do once stopped: close the
    store and leave without the interpreter's teardown, whose garbage collection of every
    loaded module (torch, transformers, Gradio) took 7 s on a busy machine, past a service
    manager's stop timeout."""
    wb.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
