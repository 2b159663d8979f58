"""Compare tab (researchers): two policy versions side by side, blind arena battles with
a leaderboard, and automatic evaluations on a held-out prompt set.

Handlers first, layout last (`build`). Every handler checks the role on the server;
hiding the tab from annotators is only a convenience. Completions are model output:
they are shown through `RenderedText` (app.render), never as HTML, and the
heat map's HTML is built from version names (escaped) and numbers only. In the arena
the versions' names stay on the server until the vote is stored.
"""

from __future__ import annotations

import html
import math
from typing import Callable

import gradio as gr
import pandas as pd

from app.context import AppContext
from app.render import RenderedText
from app.session import REFUSALS, RESEARCH_SAMPLING, refusal, user_error
from rlhf.compare import evaluate, summaries
from rlhf.collect import exports
from rlhf.auth import STAFF
from rlhf.compare.service import DEFAULT_MAX_NEW_TOKENS, EXPORT_FORMATS, VOTE_WORDS
from rlhf.home import BASE_VERSION
from rlhf.limits import LIMITS, check_text
from rlhf.collect.workbench import DEFAULT_PROMPT_SET
from rlhf.versions import active_policy, versions_of

NO_REWARD = "(no reward model)"
NEWEST_REWARD = "(the newest reward model)"
LEAST_PLAYED = "Least-played pair"
CHOSEN_PAIR = "Chosen pair"
ANY_SET = "(any prompt set)"
VOTE_BUTTONS = (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both are bad"))
BOOTSTRAP_ROUNDS = 1000
PROMPTS_LISTED = 200
EVALUATION_COLUMNS = ["id", "version_a", "version_b", "reward_version", "prompt_set", "n", "win_rate",
                      "mean_reward_a", "mean_reward_b", "mean_length_a", "mean_length_b", "kl_a", "kl_b",
                      "reference", "created_by", "created_at"]
FIGURE_COLUMNS = ["version", "mean_reward", "kl", "mean_length", "opponent", "evaluation"]
HEATMAP_CSS = (
    "table.compare-heatmap { border-collapse: collapse; font-variant-numeric: tabular-nums; }"
    " table.compare-heatmap th, table.compare-heatmap td { border: 1px solid var(--border-color-primary);"
    " padding: 4px 10px; text-align: center; }"
    " table.compare-heatmap td { color: #222; } table.compare-heatmap td.none { color: var(--body-text-color-subdued); }"
)
PROMPT_HINT = "*Type a prompt or choose one, then generate.*"
BATTLE_HINT = "*Start a battle: two versions answer one prompt, their names hidden until you vote.*"


# -- rendering (model text as text; HTML from numbers) ---------------------------------


def answer_markdown(title: str, text: str, details: str = "") -> str:
    """A heading, a line of figures and the answer, the answer and the heading as text."""
    body = text if text.strip() else "*(an empty answer)*"
    return f"#### {title}\n\n" + (f"*{details}*\n\n" if details else "") + body


def prompt_markdown(text: str) -> str:
    return f"**Prompt**\n\n{text}"


def _figures(answer: dict) -> str:
    parts = [f"{int(answer['num_tokens'])} tokens", "ended" if answer["finish_reason"] == "eos" else "cut at the limit"]
    if answer.get("score") is not None:
        parts.insert(0, f"reward {float(answer['score']):.3f}")
    return " · ".join(parts)


def _rate_color(rate: float) -> str:
    """Red (0) through pale yellow (0.5) to green (1), from the number alone."""
    hue = round(120 * min(max(rate, 0.0), 1.0))
    return f"hsl({hue}, 65%, 78%)"


def heatmap_html(rates: pd.DataFrame) -> str:
    """The win-rate matrix as a coloured table: row version's win rate against the column
    version (ties as half). Cells hold numbers; names are escaped."""
    if rates.empty:
        return '<div id="compare-heatmap-table"><p>No votes between two versions yet.</p></div>'
    names = [str(name) for name in rates.columns]
    head = "".join(f'<th scope="col">{html.escape(name)}</th>' for name in names)
    rows = []
    for row_name, row in rates.iterrows():
        cells = []
        for value in row.to_numpy(dtype=float):
            if math.isnan(value):
                cells.append('<td class="none">—</td>')
            else:
                cells.append(f'<td style="background:{_rate_color(float(value))}">{float(value):.2f}</td>')
        rows.append(f'<tr><th scope="row">{html.escape(str(row_name))}</th>{"".join(cells)}</tr>')
    return ('<div id="compare-heatmap-table"><p>Win rate of the row version against the column version, from the '
            'votes (ties and both bad as half)</p><table class="compare-heatmap">'
            f'<thead><tr><th>version \\ opponent</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def leaderboard_table(board: pd.DataFrame) -> pd.DataFrame:
    if board.empty:
        return pd.DataFrame(columns=["rank", "model", "rating", "95% CI", "battles", "wins", "ties", "both_bad",
                                     "losses"])
    return pd.DataFrame({
        "rank": board["rank"].astype(int), "model": board["model"], "rating": board["rating"].round(1),
        "95% CI": [f"{low:.0f} – {high:.0f}" for low, high in zip(board["ci_low"], board["ci_high"])],
        "battles": board["battles"].astype(int), "wins": board["wins"].astype(int), "ties": board["ties"].astype(int),
        "both_bad": board["both_bad"].astype(int), "losses": board["losses"].astype(int),
    })


def evaluations_table(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    table = frame.reindex(columns=EVALUATION_COLUMNS)
    for column in ("win_rate", "mean_reward_a", "mean_reward_b", "kl_a", "kl_b"):
        table[column] = pd.to_numeric(table[column], errors="coerce").round(3)
    for column in ("mean_length_a", "mean_length_b"):
        table[column] = pd.to_numeric(table[column], errors="coerce").round(1)
    table["created_at"] = [value.strftime("%Y-%m-%d %H:%M") if pd.notna(value) else "" for value in table["created_at"]]
    return table.astype(object).where(table.notna(), "")


def version_figures(figures: pd.DataFrame) -> pd.DataFrame:
    """The newest figures of each version (for the bar plots)."""
    if figures.empty:
        return pd.DataFrame(columns=FIGURE_COLUMNS)
    latest = figures.drop_duplicates("version", keep="first")
    return latest[FIGURE_COLUMNS].reset_index(drop=True)


def _plot_frame(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    kept = frame[["version", column]].copy()
    kept[column] = pd.to_numeric(kept[column], errors="coerce")
    return kept.dropna().reset_index(drop=True)


def _limits(values: pd.Series) -> list[float]:
    """An axis range holding 0 and every value, never empty (a single value, or all
    zeros, would otherwise give a plot of zero height)."""
    low, high = min(0.0, float(values.min())) if len(values) else 0.0, max(0.0, float(values.max())) if len(values) else 1.0
    pad = (high - low) * 0.1 or 1.0
    return [low - (pad if low < 0 else 0.0), high + (pad if high > 0 or low == 0 else 0.0)]


def bar_update(frame: pd.DataFrame, column: str):
    """A bar per version; no data at all rather than an empty table (a plot first drawn from an
    empty table stays blank when data comes later)."""
    data = _plot_frame(frame, column)
    if data.empty:
        return gr.update(value=None)
    return gr.update(value=data, y_lim=_limits(data[column]))


def scatter_update(frame: pd.DataFrame):
    data = frame.reindex(columns=["version", "kl", "mean_reward"])
    for column in ("kl", "mean_reward"):
        data[column] = pd.to_numeric(data[column], errors="coerce")
    data = data.dropna().reset_index(drop=True)
    if data.empty:
        return gr.update(value=None)
    return gr.update(value=data, x_lim=_limits(data["kl"]), y_lim=_limits(data["mean_reward"]))


def evaluation_sentence(result: dict) -> str:
    a, b = result["version_a"], result["version_b"]
    parts = [f"**Evaluation #{result['id']}**: {a} vs {b} on {result['n']} prompts"
             + (f" of '{result['prompt_set']}'" if result["prompt_set"] else "") + "."]
    if result["win_rate"] is not None:
        parts.append(f"Win rate of {a} over {b} under {result['reward_version']}: **{result['win_rate']:.3f}** "
                     f"({summaries.tally(result)}).")
    else:
        parts.append("No reward model, so no win rate.")
    for side, name in (("a", a), ("b", b)):
        figures = [f"mean length {result[f'mean_length_{side}']:.1f} tokens"]
        if result[f"mean_reward_{side}"] is not None:
            figures.insert(0, f"mean reward {result[f'mean_reward_{side}']:.3f}")
        if result[f"kl_{side}"] is not None:
            figures.append(f"KL from {result['reference']} {result[f'kl_{side}']:.3f}")
        parts.append(f"{name}: " + ", ".join(figures) + ".")
    for dimension, figures in (result.get("dimensions") or {}).items():   # the reward models of a combination
        parts.append(f"Under {dimension}: win rate {_figure(figures['win_rate'])}, mean reward"
                     f" {_figure(figures['mean_reward_a'])} and {_figure(figures['mean_reward_b'])}.")
    return " ".join(parts)


def _figure(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


# -- handlers -----------------------------------------------------------------------


def _choice(value):
    return None if value in (None, "", NO_REWARD, NEWEST_REWARD, ANY_SET) else value


def leaderboard_view(ctx: AppContext, request: gr.Request):
    """The leaderboard, the heat map and the votes per pair."""
    ctx.user(request, *STAFF)
    return [leaderboard_table(ctx.compare.leaderboard(rounds=BOOTSTRAP_ROUNDS)), heatmap_html(ctx.compare.win_rates()),
            ctx.compare.pair_counts()]


def evaluation_view(ctx: AppContext, request: gr.Request):
    """The evaluations table and the per-version plots."""
    ctx.user(request, *STAFF)
    figures = ctx.compare.version_figures()
    latest = version_figures(figures)
    return [evaluations_table(ctx.compare.evaluations()), bar_update(latest, "mean_reward"), bar_update(latest, "kl"),
            bar_update(latest, "mean_length"), scatter_update(figures)]


def open_tab(ctx: AppContext, chosen: dict, request: gr.Request):
    """Fresh choices (keeping what is chosen when it still exists), the leaderboard and the
    evaluations."""
    ctx.user(request, *STAFF)
    frame, sets = ctx.wb.models(), ctx.compare.prompt_sets()
    policies, rewards = versions_of(frame, "policy"), versions_of(frame, "reward")

    def pick(key, options, fallback=None):
        value = chosen.get(key)
        return value if value in options else fallback

    first = active_policy(frame) or (policies[-1] if policies else None)
    other = next((name for name in reversed(policies) if name != first), first)
    newest = policies[-1] if policies else None  # the newest policy, against base, in an evaluation
    reward_choices = [NO_REWARD, *reversed(rewards)]
    default_set = DEFAULT_PROMPT_SET if DEFAULT_PROMPT_SET in sets else (sets[0] if sets else None)
    return [
        gr.update(choices=policies, value=pick("side_a", policies, first)),
        gr.update(choices=policies, value=pick("side_b", policies, other)),
        gr.update(choices=reward_choices, value=pick("side_reward", reward_choices, reward_choices[-1] if rewards
                                                     else NO_REWARD)),
        gr.update(choices=sets, value=pick("side_set", sets, default_set)),
        gr.update(choices=policies, value=pick("arena_x", policies, first)),
        gr.update(choices=policies, value=pick("arena_y", policies, other)),
        gr.update(choices=[ANY_SET, *sets], value=pick("arena_set", [ANY_SET, *sets], ANY_SET)),
        gr.update(choices=policies, value=pick("eval_a", policies, newest)),
        gr.update(choices=policies, value=pick("eval_b", policies, BASE_VERSION if BASE_VERSION in policies
                                               and BASE_VERSION != newest else first)),
        gr.update(choices=[NEWEST_REWARD, *reversed(rewards)], value=pick("eval_reward", [NEWEST_REWARD, *rewards],
                                                                          NEWEST_REWARD)),
        gr.update(choices=policies, value=pick("eval_reference", policies,
                                               BASE_VERSION if BASE_VERSION in policies else first)),
        gr.update(choices=sets, value=pick("eval_set", sets, default_set)),
        *leaderboard_view(ctx, request),
        *evaluation_view(ctx, request),
    ]


def prompt_choices(ctx: AppContext, prompt_set, request: gr.Request):
    """The prompts of the chosen set to pick from (id and the start of the text)."""
    ctx.user(request, *STAFF)
    if not prompt_set:
        return gr.update(choices=[], value=None)
    with user_error():
        frame = ctx.compare.set_prompts(prompt_set, PROMPTS_LISTED)
    choices = [(f"#{row.id} · {' '.join(row.text.split())[:90]}", int(row.id)) for row in frame.itertuples()]
    return gr.update(choices=choices, value=None)


def side_by_side(ctx: AppContext, version_a, version_b, typed, prompt_id, prompt_set, reward,
                 max_new_tokens, temperature, seed, request: gr.Request):
    """Both versions answer the typed prompt (or the chosen one): [prompt, answer A, answer B]."""
    ctx.user(request, *STAFF)
    if not (typed and typed.strip()) and prompt_id in (None, ""):
        raise refusal("Type a prompt, or choose one from a prompt set.")
    with user_error():
        check_text("prompt", typed, LIMITS.prompt_chars)
        check_text("seed", seed, LIMITS.name_chars)
    seed = str(seed or "").strip()
    if seed and not seed.lstrip("-").isdigit():
        raise refusal(f"The seed must be a whole number, not {seed!r}.")
    with user_error():
        shown = ctx.compare.side_by_side(version_a, version_b, typed, None if typed and typed.strip() else prompt_id,
                                     None, _choice(reward), max_new_tokens, temperature, int(seed) if seed else None)
    return [prompt_markdown(shown["prompt"]),
            answer_markdown(shown["a"]["version"], shown["a"]["text"], _figures(shown["a"])),
            answer_markdown(shown["b"]["version"], shown["b"]["text"], _figures(shown["b"]))]


def new_battle(ctx: AppContext, mode, version_x, version_y, typed, prompt_set, max_new_tokens,
               request: gr.Request):
    """Open a blind battle: [battle token, prompt, answer A, answer B, reveal line, 4 vote buttons]."""
    user = ctx.user(request, *STAFF)
    chosen = mode == CHOSEN_PAIR
    with user_error():
        check_text("prompt", typed, LIMITS.prompt_chars)
        battle = ctx.compare.start_battle(user, version_x if chosen else None, version_y if chosen else None,
                                      typed if typed and typed.strip() else None, None, _choice(prompt_set),
                                      max_new_tokens)
    how = "the least-played pair" if battle["chosen_by"] == "least_played" else "the pair you chose"
    return [battle["battle"], prompt_markdown(battle["prompt"]),
            answer_markdown("Answer A", battle["a"]), answer_markdown("Answer B", battle["b"]),
            f"Two versions of {how} answered, in a random order. Which answer is better?",
            *[gr.update(interactive=True) for _ in VOTE_BUTTONS]]


def cast_vote(ctx: AppContext, token, vote: str, request: gr.Request):
    """Store the vote and reveal the names: [token (cleared), reveal line, 4 buttons,
    leaderboard, heat map, pairs]."""
    user = ctx.user(request, *STAFF)
    if not token:
        raise refusal("Start a battle first.")
    with user_error():
        result = ctx.compare.vote(user, token, vote)
    reveal = (f"A was **{result['model_a']}** and B was **{result['model_b']}**. "
              f"Your vote: {VOTE_WORDS[result['vote']]}; stored as battle #{result['battle_id']}.")
    return [None, reveal, *[gr.update(interactive=False) for _ in VOTE_BUTTONS],
            *leaderboard_view(ctx, request)]


def export_votes(ctx: AppContext, format: str, request: gr.Request):
    ctx.user(request, *STAFF)
    out = exports.new_path(ctx.wb.home, f"arena-battles.{format}")
    with user_error():
        path, rows = ctx.compare.export_battles(out, format)
    return str(path), f"{rows} votes in `{path.name}`."


def run_evaluation(ctx: AppContext, version_a, version_b, prompt_set, n, reward, reference, seed,
                   max_new_tokens, request: gr.Request):
    """Evaluate A against B; [summary, evaluations table, plots]."""
    user = ctx.user(request, *STAFF)
    try:
        result = ctx.compare.evaluate(version_a, version_b, prompt_set, int(n or evaluate.DEFAULT_N), _choice(reward),
                                  reference or None, int(seed or 0), int(max_new_tokens or DEFAULT_MAX_NEW_TOKENS),
                                  created_by=user.name)
    except REFUSALS as error:
        raise refusal(str(error)) from None
    return [evaluation_sentence(result), *evaluation_view(ctx, request)]


# -- layout ---------------------------------------------------------------------------


PRIVATE = dict(api_visibility="private")


def _side_by_side_panel(ctx: AppContext) -> dict[str, gr.Dropdown]:
    """Two versions answer one prompt; returns the choices the tab fills when opened."""
    with gr.Tab("Side by side", id="compare-side"):
        with gr.Row():
            side_a = gr.Dropdown([], label="Version A", elem_id="side-a")
            side_b = gr.Dropdown([], label="Version B", elem_id="side-b")
            side_reward = gr.Dropdown([NO_REWARD], value=NO_REWARD, label="Reward model (scores)",
                                      elem_id="side-reward")
        with gr.Row():
            side_set = gr.Dropdown([], label="Prompt set", elem_id="side-set")
            side_prompt = gr.Dropdown([], label="Prompt from the set", elem_id="side-prompt")
        typed = gr.Textbox(label="Or type a prompt (used when not empty)", lines=3, elem_id="side-typed",
                           max_length=LIMITS.prompt_chars)
        with gr.Row():
            side_tokens = gr.Number(DEFAULT_MAX_NEW_TOKENS, precision=0, label="Max new tokens",
                                    minimum=1, maximum=1024)
            side_temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0: greedy)")
            side_seed = gr.Textbox(label="Seed (empty: a fresh sample each time)", max_lines=1,
                                   elem_id="side-seed", max_length=LIMITS.name_chars)
            side_button = gr.Button("Generate both", variant="primary", elem_id="side-generate")
        side_prompt_shown = RenderedText(PROMPT_HINT, elem_id="side-prompt-shown")
        with gr.Row(equal_height=False):
            with gr.Column(variant="panel", min_width=280):
                side_out_a = RenderedText(elem_id="side-answer-a")
            with gr.Column(variant="panel", min_width=280):
                side_out_b = RenderedText(elem_id="side-answer-b")

    def on_set(prompt_set, request: gr.Request):
        return prompt_choices(ctx, prompt_set, request)

    def on_side(a, b, text, prompt_id, prompt_set, reward, tokens, temperature, seed, request: gr.Request):
        return side_by_side(ctx, a, b, text, prompt_id, prompt_set, reward, tokens, temperature, seed, request)

    side_set.change(on_set, side_set, side_prompt, **PRIVATE)
    side_prompt.input(lambda: "", None, typed, **PRIVATE)  # a chosen prompt replaces the typed one
    side_button.click(on_side, [side_a, side_b, typed, side_prompt, side_set, side_reward, side_tokens,
                                side_temperature, side_seed], [side_prompt_shown, side_out_a, side_out_b],
                      **PRIVATE, **RESEARCH_SAMPLING)
    return {"side_a": side_a, "side_b": side_b, "side_reward": side_reward, "side_set": side_set}


def _arena_panel(ctx: AppContext) -> tuple[dict[str, gr.Dropdown], Callable[[list], None]]:
    """Blind battles; returns the choices the tab fills, and a function that wires the
    votes to the leaderboard's outputs (a vote updates the board)."""
    with gr.Tab("Arena", id="compare-arena"):
        with gr.Row():
            mode = gr.Radio([LEAST_PLAYED, CHOSEN_PAIR], value=LEAST_PLAYED, label="Pair", elem_id="arena-mode")
            arena_x = gr.Dropdown([], label="First version (chosen pair)", elem_id="arena-x")
            arena_y = gr.Dropdown([], label="Second version (chosen pair)", elem_id="arena-y")
        with gr.Row():
            arena_set = gr.Dropdown([ANY_SET], value=ANY_SET, label="Random prompt from", elem_id="arena-set")
            arena_typed = gr.Textbox(label="Or type a prompt", lines=1, elem_id="arena-typed",
                                     max_length=LIMITS.prompt_chars)
            arena_tokens = gr.Number(DEFAULT_MAX_NEW_TOKENS, precision=0, label="Max new tokens",
                                     minimum=1, maximum=1024)
            battle_button = gr.Button("New battle", variant="primary", elem_id="arena-new")
        battle = gr.State(None)
        arena_prompt = RenderedText(BATTLE_HINT, elem_id="arena-prompt")
        with gr.Row(equal_height=False):
            with gr.Column(variant="panel", min_width=280):
                arena_a = RenderedText(elem_id="arena-a")
            with gr.Column(variant="panel", min_width=280):
                arena_b = RenderedText(elem_id="arena-b")
        with gr.Row():
            vote_buttons = [gr.Button(label, interactive=False, elem_id=f"vote-{key}") for key, label in VOTE_BUTTONS]
        reveal = RenderedText(elem_id="arena-reveal")

    def on_battle(chosen_mode, x, y, text, prompt_set, tokens, request: gr.Request):
        return new_battle(ctx, chosen_mode, x, y, text, prompt_set, tokens, request)

    battle_button.click(on_battle, [mode, arena_x, arena_y, arena_typed, arena_set, arena_tokens],
                        [battle, arena_prompt, arena_a, arena_b, reveal, *vote_buttons], **PRIVATE,
                        **RESEARCH_SAMPLING)

    def wire_votes(board_outputs: list) -> None:
        def voting(vote: str):
            def on_vote(token, request: gr.Request):
                return cast_vote(ctx, token, vote, request)
            return on_vote

        for (key, _), button in zip(VOTE_BUTTONS, vote_buttons):
            button.click(voting(key), battle, [battle, reveal, *vote_buttons, *board_outputs], **PRIVATE)

    return {"arena_x": arena_x, "arena_y": arena_y, "arena_set": arena_set}, wire_votes


def _leaderboard_panel(ctx: AppContext) -> list:
    """Ratings from the votes; returns the outputs a vote or the opened tab refreshes."""
    with gr.Tab("Leaderboard", id="compare-leaderboard"):
        gr.Markdown("Bradley-Terry ratings from every arena vote (ties and 'both bad' as half a win), "
                    f"with 95% bootstrap intervals ({BOOTSTRAP_ROUNDS} resamples); versions whose "
                    "intervals overlap share a rank.")
        board = gr.Dataframe(label="Leaderboard", interactive=False, elem_id="arena-leaderboard")
        heatmap = gr.HTML(heatmap_html(pd.DataFrame()), elem_id="compare-heatmap", css_template=HEATMAP_CSS)
        pairs = gr.Dataframe(label="Votes per pair (least played first)", interactive=False, elem_id="arena-pairs")
        with gr.Row():
            export_format = gr.Dropdown(list(EXPORT_FORMATS), value="csv", label="Raw votes as")
            export_button = gr.Button("Export every vote", scale=0, elem_id="arena-export")
            refresh_board = gr.Button("Refresh", scale=0)
        export_file = gr.File(label="Download", interactive=False, height=90, elem_id="arena-export-file")
        export_note = RenderedText(elem_id="arena-export-note")
    board_outputs = [board, heatmap, pairs]

    def on_board(request: gr.Request):
        return leaderboard_view(ctx, request)

    def on_export(chosen_format, request: gr.Request):
        return export_votes(ctx, chosen_format, request)

    refresh_board.click(on_board, None, board_outputs, **PRIVATE)
    export_button.click(on_export, export_format, [export_file, export_note], **PRIVATE)
    return board_outputs


def _evaluation_panel(ctx: AppContext) -> tuple[dict[str, gr.Dropdown], list]:
    """Automatic evaluation; returns the choices the tab fills and the outputs it refreshes."""
    with gr.Tab("Automatic evaluation", id="compare-evaluation"):
        gr.Markdown("Samples one answer per prompt from each version (same seed for both) on the first N "
                    "prompts of a held-out set: the win rate of A over B under a reward model (ties as "
                    "half), each version's mean reward and length, and its KL from the reference: the mean "
                    "over samples of the sum over tokens of log p_version − log p_reference, on the "
                    "version's own samples (the k1 estimator of Schulman, \"Approximating KL Divergence\", "
                    "2020), at temperature 1 without top-p.")
        with gr.Row():
            eval_a = gr.Dropdown([], label="Version A", elem_id="eval-a")
            eval_b = gr.Dropdown([], label="Version B", elem_id="eval-b")
            eval_set = gr.Dropdown([], label="Held-out prompt set", elem_id="eval-set")
            eval_reward = gr.Dropdown([NEWEST_REWARD], value=NEWEST_REWARD, label="Reward model",
                                      elem_id="eval-reward")
            eval_reference = gr.Dropdown([], label="KL reference", elem_id="eval-reference")
        with gr.Row():
            eval_n = gr.Number(evaluate.DEFAULT_N, precision=0, label="N prompts", minimum=1)
            eval_tokens = gr.Number(evaluate.DEFAULT_MAX_NEW_TOKENS, precision=0, label="Max new tokens",
                                    minimum=1, maximum=1024)
            eval_seed = gr.Number(0, precision=0, label="Seed")
            eval_button = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
        eval_summary = RenderedText(elem_id="eval-summary")
        eval_table = gr.Dataframe(label="Evaluations (newest first)", interactive=False, max_height=360,
                                  elem_id="eval-table")
        gr.Markdown("Each version's newest evaluation:")
        with gr.Row():
            reward_plot = gr.BarPlot(x="version", y="mean_reward", label="Mean reward")
            kl_plot = gr.BarPlot(x="version", y="kl", label="KL from the reference (nats)")
            length_plot = gr.BarPlot(x="version", y="mean_length", label="Mean length (tokens)")
        scatter = gr.ScatterPlot(x="kl", y="mean_reward", color="version",
                                 label="Reward against KL, every evaluation")
    eval_outputs = [eval_table, reward_plot, kl_plot, length_plot, scatter]

    def on_evaluate(a, b, prompt_set, n, reward, reference, seed, tokens, request: gr.Request):
        return run_evaluation(ctx, a, b, prompt_set, n, reward, reference, seed, tokens, request)

    eval_button.click(on_evaluate, [eval_a, eval_b, eval_set, eval_n, eval_reward, eval_reference, eval_seed,
                                    eval_tokens], [eval_summary, *eval_outputs], **PRIVATE, **RESEARCH_SAMPLING)
    choices = {"eval_a": eval_a, "eval_b": eval_b, "eval_reward": eval_reward, "eval_reference": eval_reference,
               "eval_set": eval_set}
    return choices, eval_outputs


def build(ctx: AppContext) -> gr.Tab:
    """The tab: one panel per way of comparing; opening it fills every panel's choices."""
    with gr.Tab("Compare", id="compare", visible=False) as tab:
        gr.Markdown("Compare policy versions: side by side, blind in the arena, and automatically on a held-out "
                    "prompt set. Answers show as text, never as HTML.")
        with gr.Tabs():
            side_choices = _side_by_side_panel(ctx)
            arena_choices, wire_votes = _arena_panel(ctx)
            board_outputs = _leaderboard_panel(ctx)
            eval_choices, eval_outputs = _evaluation_panel(ctx)
        wire_votes(board_outputs)
        # the order open_tab answers in
        choices = {**side_choices, **arena_choices, **eval_choices}

        def on_open(request: gr.Request, *values):  # the request first: Gradio cannot pass it after *values
            return open_tab(ctx, dict(zip(choices, values)), request)

        tab.select(on_open, list(choices.values()), [*choices.values(), *board_outputs, *eval_outputs], **PRIVATE)
    return tab
