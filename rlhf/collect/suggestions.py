"""Closing the loop: reward-model scores of the comparisons in the queue, the ranking a
reward model suggests to annotators, and how far annotators agree with what they were shown.

Scores are computed off the request path: the pre-generator thread (`rlhf.collect.pregenerate`)
asks its sampling child process (`rlhf.collect.sampler_process`, a "score" request) to score the
comparisons still in the queue with the reward version(s) the queue uses, whenever
suggestions or the 'uncertain' selection are on; the server process never loads a reward
model. `score_comparisons` is the one place that turns scores into stored rows, whoever
computed them (the child process, or a `RewardScorer` in the CLI); `score_table` shows
scores without storing them (`rlhf score`).

A suggestion is the reward model's order of the completions: higher score better, scores
closer than `EQUAL_SCORE` (1e-6) tied, in canonical form (`B > A = C`). It is stored when
the scores are, so what an annotator is shown never changes under them, and each showing
is recorded (`suggestions_shown`): agreement with the suggestion compares every ranking
with the suggestion its annotator actually saw.

This module imports no torch: the server's annotation path uses it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

from rlhf.preference.ranking import parse_ranking, ranking_from_ranks
from storage import comparisons, scores
from storage.scores import EQUAL_SCORE

# score(prompts, completions, categories) -> rewards: one prompt (messages), completion text and prompt category
# per completion; the categories are for a combination's gate, a single reward model ignores them
ScoreFn = Callable[[Sequence[list[dict]], Sequence[str], Sequence[str | None]], list[float]]
AGREEMENT_COLUMNS = ["user", "items", "pairwise_agreement", "kendall_tau_b", "exact_match"]
VERSION_COLUMNS = ["reward_version", "shown_items", "pairwise_agreement", "kendall_tau_b",
                   "not_shown_items", "not_shown_pairwise_agreement", "not_shown_kendall_tau_b"]


def suggested_ranking(values: Sequence[float]) -> str:
    """The canonical ranking that scores (in letter order) give: higher is better, scores
    within EQUAL_SCORE of the next better one tied with it."""
    from rlhf.preference.agreement import dense_ranks

    return ranking_from_ranks(dense_ranks(list(values), tolerance=EQUAL_SCORE)).canonical


def _scored(found: Sequence[comparisons.Comparison]) -> tuple[list[list[dict]], list[str], list[str | None]]:
    """What a reward model scores for these comparisons: (prompt messages, completion text,
    the prompt's category), one of each per completion, in comparison then letter order."""
    return ([comparison.messages for comparison in found for _ in comparison.completions],
            [completion["text"] for comparison in found for completion in comparison.completions],
            [comparison.category for comparison in found for _ in comparison.completions])


def score_table(found: Sequence[comparisons.Comparison], score: ScoreFn) -> pd.DataFrame:
    """The completions of the comparisons scored, not stored: one row per completion
    (comparison_id, letter, model_version, score, text), `score(prompts, completions)`
    called once (not at all when there is nothing to score)."""
    rows = [{"comparison_id": comparison.id, "letter": c["letter"], "model_version": c["model_version"],
             "text": c["text"]} for comparison in found for c in comparison.completions]
    frame = pd.DataFrame(rows, columns=["comparison_id", "letter", "model_version", "text"])
    if frame.empty:
        return frame.assign(score=[])
    frame["score"] = score(*_scored(found))
    return frame[["comparison_id", "letter", "model_version", "score", "text"]]


def score_comparisons(store, reward_version: str, comparison_ids: Sequence[int], score: ScoreFn) -> int:
    """Score every completion of the comparisons with `score(prompts, completions)` (one
    call for all of them) and store the scores and the suggestion of each comparison, in
    one transaction. Returns how many comparisons were scored."""
    cur = store.cursor()
    found = [comparison for comparison in (comparisons.get(cur, int(i)) for i in comparison_ids) if comparison]
    if not found:
        return 0
    values = [float(value) for value in score(*_scored(found))]
    completions = sum(len(comparison.completions) for comparison in found)
    if len(values) != completions:
        raise RuntimeError(f"The reward model gave {len(values)} scores for {completions} completions.")
    with store.transaction() as tx:
        position = 0
        for comparison in found:
            mine = values[position:position + len(comparison.completions)]
            position += len(comparison.completions)
            scores.add_scores(tx, reward_version, {c["id"]: v for c, v in zip(comparison.completions, mine)})
            scores.add_suggestion(tx, comparison.id, reward_version, suggested_ranking(mine),
                                  {c["letter"]: v for c, v in zip(comparison.completions, mine)})
    return len(found)


def rank_list(ranking: str, k: int) -> list[int]:
    return parse_ranking(ranking, k).rank_list()


def _figures(pairs: list[tuple[list[int], list[int]]]) -> tuple[float, float, float]:
    """Mean pairwise agreement, mean tau-b (undefined values left out) and exact-match share."""
    from rlhf.preference.agreement import kendall_tau_b, nan_mean, pairwise_agreement

    agreements = [pairwise_agreement(a, b) for a, b in pairs]
    return (nan_mean(agreements), nan_mean([kendall_tau_b(a, b) for a, b in pairs]),
            nan_mean([float(value == 1.0) for value in agreements]))


def agreement_with_suggestions(rank_lists: pd.DataFrame, shown: pd.DataFrame,
                               stored: pd.DataFrame | None = None) -> dict:
    """How far annotators' rankings agree with the reward model's suggestion they were shown.

    Args:
        rank_lists: one row per ranking: comparison_id, user, rank_list (ranks in letter
            order), as `storage.activity.rank_lists` gives them (already filtered).
        shown: comparison_id, user, reward_version, suggested (`storage.scores.shown_frame`).
        stored: comparison_id, reward_version, ranking of every stored suggestion
            (`storage.scores.suggestions_frame`); when given, `by_version` also measures the
            rankings made *without* being shown a suggestion against the one the version
            made for that comparison: the difference between the two is what showing the
            suggestion changed (anchoring), or the model's merit where they agree.

    Returns:
        dict: items (rankings made with a suggestion shown), pairwise_agreement,
        kendall_tau_b, exact_match (means over those rankings; tau-b undefined for a full
        tie on either side and left out), per_annotator (user, items, pairwise_agreement,
        kendall_tau_b, exact_match) and by_version (reward_version, shown_items and figures,
        not_shown_items and figures).
    """
    merged = rank_lists.merge(shown, on=["comparison_id", "user"], how="inner")
    pairs = [(list(ranks), rank_list(text, len(ranks))) for ranks, text in zip(merged["rank_list"], merged["suggested"])]
    overall = _figures(pairs)
    per_annotator = pd.DataFrame(
        [(user, len(rows), *_figures([pairs[i] for i in rows])) for user, rows in _positions(merged["user"]).items()],
        columns=AGREEMENT_COLUMNS,
    )
    by_version = []
    versions = set(shown["reward_version"]) | (set(stored["reward_version"]) if stored is not None else set())
    grouped = _positions(merged["reward_version"])
    for version in sorted(versions):
        seen = [pairs[i] for i in grouped.get(version, [])]
        row = [version, len(seen), *_figures(seen)[:2]]
        if stored is not None:
            made = stored[stored["reward_version"] == version][["comparison_id", "ranking"]]
            unseen = rank_lists.merge(shown[["comparison_id", "user"]], on=["comparison_id", "user"],
                                      how="left", indicator=True)
            unseen = unseen[unseen["_merge"] == "left_only"].merge(made, on="comparison_id")
            others = [(list(r), rank_list(t, len(r))) for r, t in zip(unseen["rank_list"], unseen["ranking"])]
            row += [len(others), *_figures(others)[:2]]
        else:
            row += [0, float("nan"), float("nan")]
        by_version.append(row)
    return {"items": len(pairs), "pairwise_agreement": overall[0], "kendall_tau_b": overall[1],
            "exact_match": overall[2], "per_annotator": per_annotator,
            "by_version": pd.DataFrame(by_version, columns=VERSION_COLUMNS)}


def _positions(values: pd.Series) -> dict:
    """{value: [row positions]}, values sorted."""
    found: dict = {}
    for position, value in enumerate(values):
        found.setdefault(value, []).append(position)
    return dict(sorted(found.items()))


def describe(suggestion: dict | None) -> str:
    """One line for the annotation page."""
    if not suggestion:
        return ""
    return f"Reward model suggests: {suggestion['ranking']}"


__all__ = ["agreement_with_suggestions", "describe", "score_comparisons", "suggested_ranking"]
