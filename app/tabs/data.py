"""Data tab (researchers): activity, agreement, consensus, exports and prompt import;
every figure for all rounds of data collection or one, and a table split by round; how far
annotators agree with the reward model's suggestions they were shown, and a reward model
against held-out human rankings ("Reward model vs people").

Handlers first, layout last. Every handler checks the role on the server; hiding the tab
from annotators is only a convenience.
"""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import pandas as pd

from app.context import AppContext
from app.render import RenderedText
from app.session import refusal, user_error
from rlhf.collect import exports
from rlhf.preference.agreement import CONSENSUS_METHODS
from rlhf.auth import STAFF
from rlhf.limits import LIMITS, check_text
from rlhf.collect.reports import Filters
from rlhf.collect.exports import EXPORT_FORMATS

EXPORT_SUFFIXES = (".jsonl", ".parquet")
ALL_ROUNDS = "all"


def round_choices(known: list[tuple[int, str | None]]) -> list[tuple[str, str]]:
    """(label, value) pairs for the round selector: all rounds, then each round with its policy."""
    return [("All rounds", ALL_ROUNDS)] + [
        (f"Round {number}" + (f" · {policy}" if policy else ""), str(number)) for number, policy in known]


def _filters(prompt_sets, annotators, model_versions, round_choice=ALL_ROUNDS) -> Filters:
    chosen = () if round_choice in (None, "", ALL_ROUNDS) else (int(round_choice),)
    return Filters(tuple(prompt_sets or ()), tuple(annotators or ()), tuple(model_versions or ()), rounds=chosen)


def _figure(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def agreement_summary(figures: dict) -> str:
    if not figures["items"]:
        return ("No comparison has been ranked by two or more annotators yet: set the queue's overlap above 1 "
                "to measure agreement.")
    return (f"Over **{figures['items']}** comparisons ranked by two or more annotators: pairwise agreement "
            f"**{_figure(figures['pairwise_agreement'])}**, Kendall's tau-b **{_figure(figures['kendall_tau_b'])}**, "
            f"Krippendorff's alpha (ordinal) **{_figure(figures['krippendorff_alpha'])}**.")


def suggestion_summary(figures: dict) -> str:
    if not figures["items"]:
        return ("No ranking was made with a reward model's suggestion on screen yet: turn suggestions on in the "
                "Queue tab (a reward model must exist).")
    return (f"Over **{figures['items']}** rankings made with a suggestion shown: pairwise agreement with it "
            f"**{_figure(figures['pairwise_agreement'])}**, Kendall's tau-b **{_figure(figures['kendall_tau_b'])}**, "
            f"ranked exactly as suggested **{_figure(figures['exact_match'])}**. Per reward version, the same "
            "figures for rankings made *without* the suggestion on screen (`not_shown_…`): much higher agreement "
            "when shown suggests annotators follow it rather than judge.")


def refresh(ctx: AppContext, method: str, prompt_sets, annotators, model_versions,
            round_choice, request: gr.Request):
    user = ctx.user(request, *STAFF)
    filters = _filters(prompt_sets, annotators, model_versions, round_choice)
    activity = ctx.reports.activity(filters)
    figures = ctx.reports.agreement(filters, method)
    per_annotator = figures["per_annotator"]
    suggested = ctx.reports.suggestion_agreement(filters)
    choices = ctx.reports.choices()
    return [
        gr.update(choices=choices["prompt_sets"]), gr.update(choices=choices["annotators"]),
        gr.update(choices=choices["model_versions"]), gr.update(choices=round_choices(choices["rounds"])),
        ctx.reports.by_round(filters),
        activity["per_annotator"], activity["per_day"], activity["recent"],
        agreement_summary(figures), per_annotator,
        per_annotator.dropna(subset=["tau_b_to_consensus"]) if not per_annotator.empty else per_annotator,
        ctx.annotation.gold_agreement(user),
        suggestion_summary(suggested), suggested["per_annotator"], suggested["by_version"],
        gr.update(choices=choices["reward_versions"]),
    ]


def audit_summary(result: dict, requested: int) -> str:
    lines = [f"**{result['version']}** against **{result['held_out_rankings']}** held-out human rankings of "
             f"{result['held_out_comparisons']} comparisons ({result['scored_rankings']} scored): pairwise "
             f"agreement **{_figure(result['pairwise_agreement'])}**, Kendall's tau-b "
             f"**{_figure(result['kendall_tau_b'])}**, pair accuracy **{_figure(result['pair_accuracy'])}** "
             f"({result['pairs_right']} right, {result['pairs_wrong']} wrong of the annotators' strict pairs).",
             f"*{result['note']}*"]
    if result["missing"]:
        lines.append(f"{len(result['missing'])} held-out comparisons have no scores from this version yet: they are "
                     f"being scored in the background ({requested} waiting); audit again in a moment.")
    return "  \n".join(lines)


def audit_reward(ctx: AppContext, version, request: gr.Request):
    """The reward version against held-out human rankings; comparisons it has not scored yet
    are handed to the background scorer."""
    ctx.user(request, *STAFF)
    with user_error():
        result = ctx.reports.reward_audit(version or None)
    requested = ctx.pregenerator.request_scores(result["version"], result["missing"]) if result["missing"] else 0
    return audit_summary(result, requested), result["worst"]


def compute_consensus(ctx: AppContext, method: str, prompt_sets, annotators,
                      model_versions, round_choice, request: gr.Request) -> pd.DataFrame:
    ctx.user(request, *STAFF)
    with user_error():
        return ctx.reports.compute_consensus(_filters(prompt_sets, annotators, model_versions, round_choice), method)


def export(ctx: AppContext, format: str, selection: str, suffix: str, request: gr.Request):
    ctx.user(request, *STAFF)
    out = exports.new_path(ctx.wb.home, f"{format}{suffix}")
    with user_error():
        path, rows = ctx.wb.export(format, out, selection)
    return str(path), f"{rows} {format} rows in `{path.name}`."


def import_prompts(ctx: AppContext, upload: str | None, prompt_set: str, request: gr.Request) -> str:
    ctx.user(request, *STAFF)
    if not upload:
        raise refusal("Choose a file to import first.")
    with user_error():
        check_text("prompt set name", prompt_set, LIMITS.name_chars)
    name = prompt_set.strip() or Path(upload).name.split(".")[0]
    with user_error():
        added = ctx.wb.import_prompts(upload, name)
    return f"Imported **{added}** new prompts into set **{name}**."


def build(ctx: AppContext) -> gr.Tab:
    """The tab; the reward audit has the server's pre-generator score what it needs in the
    background."""
    with gr.Tab("Data", id="data", visible=False) as tab:
        with gr.Row():
            prompt_sets = gr.Dropdown([], multiselect=True, label="Prompt sets")
            annotators = gr.Dropdown([], multiselect=True, label="Annotators")
            model_versions = gr.Dropdown([], multiselect=True, label="Model versions")
            round_choice = gr.Dropdown(round_choices([]), value=ALL_ROUNDS, label="Round",
                                       info="A round lasts while one policy is active; applies to every figure.")
            refresh_button = gr.Button("Refresh", scale=0)
        gr.Markdown("### Rounds\nComparisons and rankings per round of data collection, with the policy that "
                    "was active in it and the agreement over its comparisons ranked by two or more annotators.")
        per_round = gr.Dataframe(label="Per round", interactive=False)
        gr.Markdown("### Activity")
        with gr.Row():
            per_annotator = gr.Dataframe(label="Per annotator", interactive=False)
            per_day = gr.Dataframe(label="Per day", interactive=False)
        recent = gr.Dataframe(label="Recent rankings", interactive=False, max_height=360)
        gr.Markdown("### Agreement")
        method = gr.Radio(list(CONSENSUS_METHODS), value="ranked_pairs", label="Consensus method")
        summary = RenderedText(elem_id="agreement-summary")
        with gr.Row():
            to_consensus = gr.Dataframe(label="Each annotator's tau-b to the consensus", interactive=False)
            plot = gr.BarPlot(x="user", y="tau_b_to_consensus", y_lim=[-1, 1], label="tau-b to consensus")
        gold = gr.Dataframe(label="Agreement with gold items", interactive=False)
        gr.Markdown("### Agreement with the reward model's suggestions\nEach ranking against the suggestion its "
                    "annotator saw (ties count: `A = B` against `A > B` disagrees).")
        suggestion_note = RenderedText(elem_id="suggestion-note")
        with gr.Row():
            suggestion_people = gr.Dataframe(label="Per annotator", interactive=False)
            suggestion_versions = gr.Dataframe(label="Per reward version, shown and not shown", interactive=False)
        gr.Markdown("### Reward model vs people\nA reward version against the human rankings it was not trained "
                    "on, and the comparisons where its order and the annotators' differ most (worst first: where a "
                    "policy trained on it would learn the wrong thing).")
        with gr.Row():
            reward_choice = gr.Dropdown([], label="Reward version (empty: the newest)", elem_id="audit-version")
            audit_button = gr.Button("Audit", scale=0, elem_id="audit")
        audit_note = RenderedText(elem_id="audit-note")
        audit_worst = gr.Dataframe(label="Largest disagreements", interactive=False, max_height=420, wrap=True)
        gr.Markdown("### Consensus orderings (stored beside the raw rankings)")
        consensus_button = gr.Button("Compute and store the consensus with this method")
        consensus = gr.Dataframe(interactive=False, max_height=360)
        gr.Markdown("### Export")
        with gr.Row():
            export_format = gr.Dropdown(list(EXPORT_FORMATS), value="preference", label="Format")
            selection = gr.Dropdown(["all", "best_vs_worst"], value="all", label="Pairs")
            suffix = gr.Dropdown(list(EXPORT_SUFFIXES), value=".jsonl", label="File type")
            export_button = gr.Button("Export", scale=0)
        export_file = gr.File(label="Download", interactive=False)
        export_note = RenderedText(elem_id="export-note")
        gr.Markdown("### Import prompts\nCSV, JSONL or Parquet with a `prompt` or `messages` column, or the "
                    "HH-RLHF layout; gzip accepted. A bad row names its line and nothing is imported.")
        with gr.Row():
            upload = gr.File(label="Prompt file", type="filepath")
            prompt_set = gr.Textbox(label="Prompt set (default: the file name)", max_length=LIMITS.name_chars)
            import_button = gr.Button("Import", scale=0)
        import_note = RenderedText(elem_id="import-note")
        timer = gr.Timer(15.0)

        filters = [prompt_sets, annotators, model_versions, round_choice]
        outputs = [*filters, per_round, per_annotator, per_day, recent, summary, to_consensus, plot, gold,
                   suggestion_note, suggestion_people, suggestion_versions, reward_choice]

        # the request comes first: Gradio cannot pass it after *chosen
        def on_refresh(request: gr.Request, chosen_method, *chosen):
            return refresh(ctx, chosen_method, *chosen, request)

        gr.on([refresh_button.click, timer.tick, method.change, *(f.change for f in filters)], on_refresh,
              [method, *filters], outputs, api_visibility="private", show_progress="hidden")
        def on_consensus(request: gr.Request, chosen_method, *chosen):
            return compute_consensus(ctx, chosen_method, *chosen, request)

        def on_export(chosen_format, chosen_selection, chosen_suffix, request: gr.Request):
            return export(ctx, chosen_format, chosen_selection, chosen_suffix, request)

        def on_import(path, name, request: gr.Request):
            return import_prompts(ctx, path, name, request)

        def on_audit(version, request: gr.Request):
            return audit_reward(ctx, version, request)

        audit_button.click(on_audit, [reward_choice], [audit_note, audit_worst], api_visibility="private")
        consensus_button.click(on_consensus, [method, *filters], consensus, api_visibility="private")
        export_button.click(on_export, [export_format, selection, suffix], [export_file, export_note],
                            api_visibility="private")
        import_button.click(on_import, [upload, prompt_set], import_note, api_visibility="private")
        tab.select(on_refresh, [method, *filters], outputs, api_visibility="private")
    return tab
