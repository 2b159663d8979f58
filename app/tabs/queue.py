"""Queue tab (researchers): what annotators are handed, the guidelines, gold items."""

from __future__ import annotations

import json

import gradio as gr

from app.context import AppContext
from app.render import RenderedText
from app.session import refusal, user_error
from rlhf.auth import STAFF
from rlhf.checks import typed_whole
from rlhf.collect.annotation import QueueConfig
from rlhf.limits import LIMITS, check_text
from rlhf.collect.pregenerate import PreGenerator
from rlhf.collect.sources import SOURCES_EXAMPLE

ACTIVE_POLICY = "(the active policy)"
SOURCES_HELP = ("Where each comparison's completions come from, as JSON; empty: all K from the generating "
                "model version. `version` is `active`, `previous` (active in the round before), `base` or a "
                "version name; `count` how many; optional `temperature`, `top_p`. K becomes the sum of the "
                "counts. Completions are shuffled: annotators never see which is which.")


SELECTION_CHOICES = [("As they come (closest to complete, then oldest)", "random"),
                     ("Where the reward model is least sure first", "uncertain"),
                     ("Shown completions picked by Thompson sampling from more candidates", "thompson")]
NEWEST_REWARD = "(the newest reward model)"
CLOSING_HELP = ("With a reward model: show annotators its ranking as a suggestion (a muted box, never filled "
                "into their ranking; agreement with it is on the Data tab), and/or hand out first the comparisons "
                "it is least sure about (the smallest gap between two completions' scores; with two reward models "
                "chosen, where they disagree most). Scores are computed in the background.")


def generation_line(pregenerator: PreGenerator) -> str:
    status = pregenerator.status()
    line = (f"Pre-generation: **{status['state']}** · {status['ready']} comparisons ready of "
            f"{status['target']} wanted · {status['generated_total']} generated since start")
    if status.get("scored_total"):
        line += f" · {status['scored_total']} scored by a reward model"
    if status.get("score_error"):
        line += f"  \nScoring error: {status['score_error']}"
    if status.get("round") is not None:
        line += f" · round {status['round']}"
    if status.get("note"):
        line += f"  \nNote: {status['note']}"
    return line + (f"  \nLast error: {status['last_error']}" if status.get("last_error") else "")


def sources_text(sources: list[dict] | None) -> str:
    """The sources setting as the JSON shown in the editor: one source a line, '' for none."""
    if not sources:
        return ""
    return "[\n" + ",\n".join("  " + json.dumps(source) for source in sources) + "\n]"


def parse_sources(text: str | None) -> list[dict] | None:
    """The editor's JSON as a sources list (None when empty); checked by the service."""
    if text is None or not text.strip():
        return None
    with user_error():
        check_text("sources", text, LIMITS.settings_chars)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise refusal(f"The sources are not valid JSON ({error.msg} at line {error.lineno}); "
                      f"write them like {SOURCES_EXAMPLE}.") from None


def current_settings(ctx: AppContext, request: gr.Request):
    ctx.user(request, *STAFF)
    config = ctx.annotation.config
    versions = list(ctx.wb.models()["name"])
    version, text = ctx.annotation.guidelines()
    return [
        gr.update(choices=list(ctx.wb.prompt_sets()["prompt_set"]), value=config.prompt_sets or []),
        gr.update(choices=[ACTIVE_POLICY, *versions], value=config.model_version or ACTIVE_POLICY),
        config.overlap, config.ready_target, config.gold_rate, config.k, config.max_new_tokens,
        sources_text(config.sources),
        generation_line(ctx.pregenerator), text, f"Editing guidelines version {version}.",
        config.suggest, config.selection,
        gr.update(choices=[NEWEST_REWARD, *ctx.wb.models().query("kind == 'reward'")["name"]],
                  value=config.reward_models or [NEWEST_REWARD]),
        config.candidates,
    ]


def describe_sources(sources: list[dict] | None) -> str:
    if not sources:
        return "all from the generating version"
    return ", ".join(
        f"{s['count']} × {s['version']}" + (f" at temperature {s['temperature']:g}" if "temperature" in s else "")
        for s in sources)


def describe_loop(config) -> str:
    """The reward-model settings and the thompson selection in words ('' when all are off)."""
    thompson = (f" Thompson selection: K={config.k} shown of M={config.candidates} candidates per prompt."
                if config.selection == "thompson" else "")
    if not config.suggest and config.selection != "uncertain":
        return thompson
    models = " and ".join(config.reward_models) if config.reward_models else "the newest reward model"
    parts = (["suggestions shown"] if config.suggest else []) + (
        ["least sure first"] if config.selection == "uncertain" else [])
    return f" With {models}: {', '.join(parts)}.{thompson}"


def save_settings(ctx: AppContext, prompt_sets, model_version, overlap,
                  ready_target, gold_rate, k, max_new_tokens, sources, request: gr.Request,
                  suggest=None, selection=None, reward_models=None, candidates=None) -> str:
    """Store the queue settings; the reward-model ones (suggest, selection, reward_models)
    and the thompson selection's `candidates` (M) keep their value when not given."""
    user = ctx.user(request, *STAFF)
    chosen_sources = parse_sources(sources)
    loop = {}
    if suggest is not None:
        loop["suggest"] = bool(suggest)
    if selection is not None:
        loop["selection"] = selection
    if reward_models is not None:
        chosen = [name for name in ([reward_models] if isinstance(reward_models, str) else reward_models)
                  if name != NEWEST_REWARD]
        loop["reward_models"] = chosen or None
    if candidates is not None:
        loop["candidates"] = typed_whole(candidates)
    with user_error():  # every number is checked by the service, in its words (an emptied box too)
        config = ctx.annotation.set_config(
            user, prompt_sets=prompt_sets or None,
            model_version=None if model_version in (None, ACTIVE_POLICY) else model_version,
            overlap=typed_whole(overlap), ready_target=typed_whole(ready_target), gold_rate=gold_rate,
            k=typed_whole(k), max_new_tokens=typed_whole(max_new_tokens), sources=chosen_sources, **loop)
    ctx.pregenerator.wake()
    sets = ", ".join(config.prompt_sets) if config.prompt_sets else "all sets"
    return (f"Saved: {config.overlap} annotator(s) per comparison, {sets}, K={config.k} "
            f"({describe_sources(config.sources)}).{describe_loop(config)}")


def save_guidelines(ctx: AppContext, text: str, request: gr.Request) -> str:
    user = ctx.user(request, *STAFF)
    with user_error():
        check_text("guidelines", text, LIMITS.guidelines_chars)
        version = ctx.annotation.save_guidelines(user, text)
    return f"Saved as guidelines version {version}; new rankings record it."


def mark_gold(ctx: AppContext, comparison_id, ranking: str, request: gr.Request) -> str:
    user = ctx.user(request, *STAFF)
    if comparison_id is None:
        raise refusal("Give the id of the comparison to mark.")
    with user_error():
        check_text("ranking", ranking, LIMITS.ranking_chars)
        stored = ctx.annotation.mark_gold(user, int(comparison_id), ranking)
    if stored is None:
        return f"Comparison {int(comparison_id)} is no longer a gold item."
    return f"Comparison {int(comparison_id)} is a gold item, expected **{stored}**."


def build(ctx: AppContext) -> gr.Tab:
    with gr.Tab("Queue", id="queue", visible=False) as tab:
        status = RenderedText(elem_id="queue-status")
        gr.Markdown("### What annotators are handed")
        with gr.Row():
            prompt_sets = gr.Dropdown([], multiselect=True, label="Prompt sets (none chosen: all)")
            model_version = gr.Dropdown([ACTIVE_POLICY], label="Generating model version")
        with gr.Row():
            overlap = gr.Number(label="Annotators per comparison (overlap)", precision=0, minimum=1,
                                info=QueueConfig.help("overlap"))
            ready_target = gr.Number(label="Comparisons kept ready", precision=0, minimum=0,
                                     info=QueueConfig.help("ready_target"))
            gold_rate = gr.Slider(0, 1, step=0.05, label="Share of gold items", info=QueueConfig.help("gold_rate"))
            k = gr.Slider(2, 8, step=1, label="Completions per comparison (K)", info=QueueConfig.help("k"))
            max_new_tokens = gr.Number(label="Max new tokens", precision=0, minimum=1,
                                       info=QueueConfig.help("max_new_tokens"))
        sources = gr.Textbox(label="Completion sources (JSON; empty: all K from one version)", lines=4,
                             placeholder=SOURCES_EXAMPLE, elem_id="queue-sources", max_length=LIMITS.settings_chars)
        gr.Markdown(SOURCES_HELP + f"  \nFor example: `{SOURCES_EXAMPLE}`")
        gr.Markdown("#### Closing the loop with a reward model\n" + CLOSING_HELP)
        with gr.Row():
            suggest = gr.Checkbox(label="Show annotators the reward model's suggestion", elem_id="queue-suggest")
            selection = gr.Radio(SELECTION_CHOICES, value="random", label="Which comparison comes next",
                                 elem_id="queue-selection")
            reward_models = gr.Dropdown([NEWEST_REWARD], value=[NEWEST_REWARD], multiselect=True, max_choices=2,
                                        label="Reward model(s) (two: their disagreement orders the queue)",
                                        elem_id="queue-reward-models")
            candidates = gr.Number(label="Candidates per prompt (M, thompson selection)", precision=0,
                                   info=QueueConfig.help("candidates"),
                                   elem_id="queue-candidates")
        save_button = gr.Button("Save queue settings", variant="primary")
        saved = RenderedText(elem_id="queue-saved")
        gr.Markdown("### Gold items\nMixed into the queue unannounced; each annotator's agreement with them "
                    "is on the Data tab.")
        with gr.Row():
            gold_id = gr.Number(label="Comparison id", precision=0)
            gold_ranking = gr.Textbox(label="Expected ranking (empty: unmark)", placeholder="B > A = C > D",
                                      max_length=LIMITS.ranking_chars)
            gold_button = gr.Button("Mark", scale=0)
        gold_note = RenderedText(elem_id="queue-gold-note")
        gr.Markdown("### Annotation guidelines (Markdown, versioned)")
        guidelines_note = RenderedText(elem_id="queue-guidelines-note")
        guidelines = gr.Textbox(lines=14, show_label=False, max_length=LIMITS.guidelines_chars)
        guidelines_button = gr.Button("Save as a new version")
        timer = gr.Timer(5.0)

        fields = [prompt_sets, model_version, overlap, ready_target, gold_rate, k, max_new_tokens, sources]

        def on_open(request: gr.Request):
            return current_settings(ctx, request)

        loop_fields = [suggest, selection, reward_models, candidates]

        def on_save(request: gr.Request, *values):
            *queue_values, chosen_suggest, chosen_selection, chosen_models, chosen_candidates = values
            return save_settings(ctx, *queue_values, request, suggest=chosen_suggest, selection=chosen_selection,
                                 reward_models=chosen_models, candidates=chosen_candidates)

        def on_gold(comparison_id, ranking, request: gr.Request):
            return mark_gold(ctx, comparison_id, ranking, request)

        def on_guidelines(text, request: gr.Request):
            return save_guidelines(ctx, text, request)

        tab.select(on_open, None, [*fields, status, guidelines, guidelines_note, *loop_fields],
                   api_visibility="private")
        save_button.click(on_save, [*fields, *loop_fields], saved, api_visibility="private")
        gold_button.click(on_gold, [gold_id, gold_ranking], gold_note, api_visibility="private")
        guidelines_button.click(on_guidelines, guidelines, guidelines_note, api_visibility="private")
        timer.tick(lambda: generation_line(ctx.pregenerator), None, status, api_visibility="private",
                   show_progress="hidden")
    return tab
