"""Comparisons tab (researchers): browse what the store holds, one comparison at a time.
Annotators do not get it: reading ahead in the queue would colour their rankings."""

from __future__ import annotations

import gradio as gr

from app.context import AppContext
from app.render import Blocks, RenderedText
from rlhf.auth import STAFF
from rlhf.collect.workbench import Workbench, WorkbenchError


def comparison_markdown(wb: Workbench, comparison_id: int | None) -> str | Blocks:
    """The prompt and each completion, each its own text (one's unclosed fence stays its own)."""
    if comparison_id is None:
        return "Pick a comparison."
    try:
        comparison = wb.comparison(int(comparison_id))
    except WorkbenchError as error:
        return str(error)
    blocks = ["### Prompt", comparison.prompt]
    for completion in comparison.completions:
        blocks += ["---", f"### {completion['letter']}", completion["text"]]
    return Blocks(blocks)


def summary_table(wb: Workbench):
    frame = wb.comparisons()
    if frame.empty:
        return frame
    return frame.assign(prompt=frame["prompt"].str.slice(0, 80))[["id", "prompt_set", "prompt", "k", "rankings"]]


def build(ctx: AppContext) -> gr.Tab:
    wb = ctx.wb

    def on_show(comparison_id, request: gr.Request) -> str:
        ctx.user(request, *STAFF)
        return comparison_markdown(wb, comparison_id)

    def on_list(request: gr.Request):
        ctx.user(request, *STAFF)
        return summary_table(wb)

    with gr.Tab("Comparisons", id="comparisons", visible=False) as tab:
        gr.Markdown("Every comparison in the store. Type an id to read it; completions show as text, never as HTML.")
        table = gr.Dataframe(interactive=False, label="Comparisons")
        with gr.Row():
            chosen = gr.Number(label="Comparison id", precision=0)
            refresh = gr.Button("Refresh list")
        shown = RenderedText(elem_id="comparison-shown")
        chosen.submit(on_show, chosen, shown, api_name="show_comparison")
        gr.on([refresh.click, tab.select], on_list, None, table, api_name="list_comparisons")
    return tab
