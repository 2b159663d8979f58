"""`rlhf serve`: the Gradio app, which owns the workbench's database while it runs."""

from __future__ import annotations

import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline lab

import gradio as gr  # noqa: E402

from app.tabs import comparisons  # noqa: E402
from rlhf.workbench import Workbench  # noqa: E402

TITLE = "RLHF Workbench"


def build_app(wb: Workbench) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nHome: `{wb.home.root}`")
        comparisons.build(wb)
    return app


def serve(wb: Workbench, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve until interrupted; server.json in the home tells other processes where."""
    app = build_app(wb)
    app.queue(default_concurrency_limit=8)
    url = f"http://{host}:{port}"
    wb.home.server_file.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    try:
        app.launch(server_name=host, server_port=port, show_error=True, quiet=True)
    finally:
        wb.home.server_file.unlink(missing_ok=True)
