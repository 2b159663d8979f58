"""Annotate tab: one comparison at a time, ranked with per-completion selectors or typed
as `C > B = D > A`, the two kept in sync.

Handlers first, layout last (`build`). The user is always the logged-in one
(`gr.Request.username`); nothing the browser sends names the annotator.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.context import AppContext
from app.render import RenderedText
from rlhf.collect import suggestions
from app.session import REQUESTS, refusal, user_error
from rlhf.collect.annotation import Item, Submission
from rlhf.limits import LIMITS
from rlhf.preference.ranking import RankingError, letters, parse_ranking, ranking_from_ranks
from rlhf.modeling.sampling import MAX_K

FLAGS = {"—": None, "unsafe": "unsafe", "factually wrong": "factually_wrong", "nonsense": "nonsense"}
MARKS = {"—": None, "good": True, "bad": False}
SKIP_REASONS = ["I cannot judge this topic", "The prompt is unclear", "All completions are identical",
                "Something is broken", "Other"]
LIKERT = [1, 2, 3, 4, 5]

SHORTCUTS = """**Keyboard** (outside a text field): `1`–`8` add completion A–H to the ranking
(`1` = A) with `>`; `=` turns the last `>` into a tie; `Backspace` removes the last letter;
`Enter` submits; `S` skips. In the ranking field type `c>b=d>a` (spaces optional) and press
`Enter`."""


@dataclass
class Shown:
    """What the page has on screen: the hand-out's token (never the comparison's id), the
    number of completions and the dimensions rated (as the queue had them when handed out)."""

    handout: str
    k: int
    dimensions: tuple[str, ...] = ()


# -- handlers -----------------------------------------------------------------------


def ranking_hint(k: int) -> str:
    return f"Rank all {k} completions: type `{' > '.join(letters(k))}` or use the selectors."


def ranking_status(text: str, k: int | None) -> tuple[str, bool]:
    """(message for the page, whether Submit is allowed) for what the annotator typed."""
    if not k:
        return "", False
    if len(text or "") > LIMITS.ranking_chars:  # capped before it is parsed
        return f"Not valid: a ranking is at most {LIMITS.ranking_chars} characters.", False
    if not (text or "").strip():
        return ranking_hint(k), False  # a fresh item, or everything deleted: nothing wrong yet
    try:
        ranking = parse_ranking(text, k)
    except RankingError as error:
        return f"Not valid yet: {error}", False
    return f"Ranking: `{ranking.canonical}`", True


def typed_ranking(text: str, shown: Shown | None, *chosen):
    """The text field changed (typed, pasted, set by a shortcut or by the selectors):
    update the rank selectors when it parses to a ranking they do not show already."""
    k = shown.k if shown else None
    message, valid = ranking_status(text, k)
    ranks = parse_ranking(text, k).rank_list() if valid else None
    if ranks and None not in chosen[:k] and ranking_from_ranks([int(r) for r in chosen[:k]]).rank_list() == ranks:
        ranks = None  # the selectors wrote this text: leave them as the annotator set them
    selectors = [gr.update(value=ranks[i]) if ranks and i < k else gr.skip() for i in range(MAX_K)]
    return [message, gr.update(interactive=valid), *selectors]


def selected_ranks(shown: Shown | None, *ranks):
    """A rank selector changed: rewrite the text field once every completion has a rank."""
    if shown is None:
        return [gr.skip(), "", gr.update(interactive=False)]
    chosen = ranks[: shown.k]
    if any(rank is None for rank in chosen):
        missing = ", ".join(letters(shown.k)[i] for i, r in enumerate(chosen) if r is None)
        return [gr.skip(), f"Give a rank to {missing}.", gr.update(interactive=False)]
    canonical = ranking_from_ranks([int(r) for r in chosen]).canonical
    return [canonical, f"Ranking: `{canonical}`", gr.update(interactive=True)]


def cleared_details(dimensions: tuple[str, ...]) -> list:
    """Marks, flags, ratings, 'none acceptable' and the comment, back to empty."""
    ratings = [None] * (MAX_K * len(dimensions))
    return [*["—"] * MAX_K, *["—"] * MAX_K, *ratings, False, ""]


def suggestion_update(item: Item | None):
    """The muted suggestion box: shown only with a reward model's suggestion, and never
    written into the ranking: the annotator ranks as they judge."""
    if item is None or not item.suggestion:
        return gr.update(value="", visible=False)
    return gr.update(visible=True, value=(
        f"**{suggestions.describe(item.suggestion)}**  \n"
        f"*A suggestion from reward model {item.suggestion['reward_version']}, which may be wrong: "
        "rank as you judge. It is not filled in for you.*"))


def item_updates(ctx: AppContext, item: Item | None, notice: str = ""):
    """Every component's new state for showing `item` (or the empty-queue message); the
    suggestion box comes last."""
    if item is None:
        status = ctx.pregenerator.status()
        waiting = (f"No comparison is waiting for you right now. Generation: **{status['state']}**, "
                   f"{status['ready']} ready of {status['target']} wanted. This page checks again every few seconds.")
        hidden = [gr.update(visible=False)] * MAX_K
        return [None, notice or waiting, "", *hidden, *[gr.update(value=None) for _ in range(MAX_K)],
                *[gr.update(value="") for _ in range(MAX_K)], "", "", gr.update(interactive=False),
                gr.update(visible=False), "", *cleared_details(ctx.annotation.config.dimensions),
                suggestion_update(None)]
    k = len(item.completions)
    columns = [gr.update(visible=i < k) for i in range(MAX_K)]
    selectors = [gr.update(choices=list(range(1, k + 1)), value=None, label=f"Rank of {letters(k)[i]}" if i < k
                           else None) for i in range(MAX_K)]
    texts = [gr.update(value=f"### {letters(k)[i]}\n\n{item.completions[i]}" if i < k else "")
             for i in range(MAX_K)]
    progress = item.progress
    header = (f"{notice}  \nDone today **{progress.get('done_today', 0)}** · total **{progress.get('done_total', 0)}** · "
              f"waiting for you **{progress.get('remaining_for_me', '?')}** · "
              f"guidelines v{item.guidelines_version}")
    return [Shown(item.handout, k, item.dimensions), header, item.prompt, *columns, *selectors,
            *texts, "", ranking_hint(k),
            gr.update(interactive=False), gr.update(visible=True), "", *cleared_details(item.dimensions),
            suggestion_update(item)]


def load_next(ctx: AppContext, request: gr.Request, notice: str = ""):
    user = ctx.user(request)
    with user_error():
        return item_updates(ctx, ctx.annotation.next_item(user), notice)


def submit(ctx: AppContext, shown: Shown | None, text: str, none_acceptable: bool, better_answer: str,
           comment: str, details: list, request: gr.Request):
    user = ctx.user(request)
    if shown is None:
        raise refusal("There is nothing to submit: wait for the next comparison.")
    k = shown.k
    marks, flags, ratings = details[:MAX_K], details[MAX_K: 2 * MAX_K], details[2 * MAX_K:]
    dimensions = shown.dimensions
    abc = letters(k)
    submission = Submission(
        handout=shown.handout,
        ranking=text,
        labels={abc[i]: {"good": MARKS[marks[i] or "—"], "flag": FLAGS[flags[i] or "—"]} for i in range(k)
                if MARKS[marks[i] or "—"] is not None or FLAGS[flags[i] or "—"] is not None} or None,
        ratings={abc[i]: {d: int(ratings[i * len(dimensions) + j]) for j, d in enumerate(dimensions)
                          if ratings[i * len(dimensions) + j] is not None} for i in range(k)} or None,
        none_acceptable=bool(none_acceptable),
        better_answer=better_answer.strip() or None,
        comment=comment.strip() or None,
    )
    with user_error():
        result, item = ctx.annotation.submit_and_next(user, submission)
        return item_updates(ctx, item, notice=f"Saved **{result['ranking']}**.")


def skip(ctx: AppContext, shown: Shown | None, reason: str | None, request: gr.Request):
    user = ctx.user(request)
    if shown is None:
        raise refusal("There is nothing to skip.")
    with user_error():
        ctx.annotation.skip(user, shown.handout, reason or SKIP_REASONS[-1])
    return load_next(ctx, request, notice="Skipped.")


def guidelines_markdown(ctx: AppContext) -> str:
    version, text = ctx.annotation.guidelines()
    return f"*Guidelines version {version}*\n\n{text}"


# -- layout -------------------------------------------------------------------------


def build(ctx: AppContext):
    """Lay the tab out; returns (page-load handler, its outputs) for the app to wire."""
    dimensions = ctx.annotation.config.dimensions
    with gr.Tab("Annotate", id="annotate"):
        shown = gr.State(None)
        with gr.Row():
            header = RenderedText(elem_id="progress")
        with gr.Accordion("Guidelines and shortcuts", open=False, elem_id="guidelines"):
            RenderedText(lambda: guidelines_markdown(ctx), elem_id="guidelines-text")
            gr.Markdown(SHORTCUTS)
        gr.Markdown("#### Prompt")
        prompt = RenderedText(elem_id="prompt")
        columns, selectors, texts, marks, flags, ratings = [], [], [], [], [], []
        with gr.Row(equal_height=False, elem_id="completions"):
            for i in range(MAX_K):
                with gr.Column(visible=False, min_width=260, elem_classes="completion") as column:
                    texts.append(RenderedText(elem_id=f"completion-{i}"))
                    selectors.append(gr.Radio(choices=list(range(1, MAX_K + 1)), label="Rank",
                                              elem_id=f"rank-{i}"))
                    with gr.Accordion("Label and rate (optional)", open=False):
                        marks.append(gr.Radio(list(MARKS), value="—", label="Good or bad", elem_id=f"mark-{i}"))
                        flags.append(gr.Dropdown(list(FLAGS), value="—", label="Flag", elem_id=f"flag-{i}"))
                        for dimension in dimensions:
                            ratings.append(gr.Radio(LIKERT, label=dimension.capitalize(),
                                                    elem_id=f"rate-{i}-{dimension}"))
                columns.append(column)
        suggestion = RenderedText(visible=False, elem_id="suggestion", elem_classes="suggestion")
        with gr.Row():
            ranking = gr.Textbox(label="Ranking", placeholder="C > B = D > A", scale=3, elem_id="ranking",
                                 autofocus=True, max_lines=1, max_length=LIMITS.ranking_chars)
            status = RenderedText(elem_id="ranking-status")
        with gr.Row():
            submit_button = gr.Button("Submit (Enter)", variant="primary", interactive=False, elem_id="submit")
            skip_reason = gr.Dropdown(SKIP_REASONS, label="Skip reason", value=None, scale=2)
            skip_button = gr.Button("Skip (S)", elem_id="skip")
        with gr.Accordion("More (optional)", open=False) as more:
            none_acceptable = gr.Checkbox(label="None of these is acceptable", elem_id="none-acceptable")
            better_answer = gr.Textbox(label="Write a better answer", lines=4, elem_id="better-answer",
                                       max_length=LIMITS.text_chars)
            comment = gr.Textbox(label="Comment", lines=2, elem_id="comment", max_length=LIMITS.text_chars)
        poll = gr.Timer(5.0)

        details = [*marks, *flags, *ratings]
        item_outputs = [shown, header, prompt, *columns, *selectors, *texts, ranking, status, submit_button, more,
                        better_answer, *details, none_acceptable, comment, suggestion]

        def on_load(request: gr.Request):
            return load_next(ctx, request)

        def on_poll(current, request: gr.Request):
            if current is not None:
                return [gr.skip()] * len(item_outputs)
            return load_next(ctx, request)

        # the request comes first: Gradio cannot pass it after *rest
        def on_submit(request: gr.Request, current, text, none_ok, better, note, *rest):
            return submit(ctx, current, text, none_ok, better, note, list(rest), request)

        def on_skip(current, reason, request: gr.Request):
            return skip(ctx, current, reason, request)

        # .change, not .input: Gradio's Textbox fires .input on keypress only (Backspace, a
        # paste and the keyboard shortcuts of shortcuts.js went unseen) and drops keystrokes
        # made while one is handled; .change always ends on the field's last value
        ranking.change(typed_ranking, [ranking, shown, *selectors], [status, submit_button, *selectors],
                       api_visibility="private", show_progress="hidden")
        # One listener for every selector, its latest values winning: a listener per selector ran
        # their events side by side, and an answer to an earlier click that came back after a later
        # one put back the older ranking (and, through the text field, undid the annotator's click)
        gr.on([selector.input for selector in selectors], selected_ranks, [shown, *selectors],
              [ranking, status, submit_button], trigger_mode="always_last", api_visibility="private",
              show_progress="hidden")
        gr.on([submit_button.click, ranking.submit], on_submit,
              [shown, ranking, none_acceptable, better_answer, comment, *details], item_outputs,
              api_visibility="private", **REQUESTS)
        skip_button.click(on_skip, [shown, skip_reason], item_outputs, api_visibility="private")
        poll.tick(on_poll, [shown], item_outputs, api_visibility="private", show_progress="hidden")
        return on_load, item_outputs
