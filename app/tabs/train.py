"""Train tab (researchers): launch and watch training jobs, the models table."""

from __future__ import annotations

import gradio as gr

from rlhf.annotation import Annotation
from rlhf.jobs import Jobs


def build(service: Annotation, jobs: Jobs) -> gr.Tab:
    with gr.Tab("Train", visible=False) as tab:
        gr.Markdown("Training jobs (being built).")
    return tab
