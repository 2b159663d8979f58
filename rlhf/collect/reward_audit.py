"""The reward model against people: how far a reward version orders held-out human
rankings as the annotators did, and the comparisons where it disagrees with them most
(where reward hacking shows first: a policy trained on it will chase exactly those).

Held out means not trained on. A reward version made by a job was trained on the
comparisons of its snapshot (`jobs/<id>/data.parquet`, the version's `data_snapshot`)
except those the trainer held out for its own evaluation: `rlhf.train.reward` splits the
snapshot by comparison with `common.split_by_comparison(data, eval_fraction, seed)`, which
`split_comparisons` repeats from the job's `spec.json` (options.eval_fraction, default
0.1; config.seed, default 0). Every human ranking of any other comparison is held out:
those of the eval split, and those of comparisons the job never saw (made or ranked after
it, or left out by its selection). A ranking of a trained comparison is never held out,
even when it was made after the job: the model was trained on those very completions.
A reward version without a snapshot (imported, registered by hand) trained on nothing
this store knows of, so every ranking counts, and the result says so.

Figures, ties handled throughout (`rlhf.preference.agreement`): the reward model's order of a
comparison is its scores' order, scores closer than 1e-6 tied. Per held-out ranking,
pairwise agreement (better / tied / worse alike on a completion pair, so a tie the model
does not make counts against it) and Kendall's tau-b; `pair_accuracy` is the share of
the annotators' strict pairs that the model orders the same way, leaving out those it
scores equal (as `eval/accuracy` and `rlhf eval-reward` do). The disagreement list is per
comparison, the model's order against the annotators' (their ranked-pairs consensus when
several ranked it), worst first: lowest pairwise agreement, then lowest tau-b.

Scores come from the store (`completion_scores`); comparisons not scored yet are listed in
`missing` and left out. `audit(..., score=...)` scores them first (the CLI passes a
`RewardScorer`'s `score`; the server asks its background scorer instead).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.preference import agreement
from rlhf.preference.ranking import ranking_from_ranks
from rlhf.collect.suggestions import ScoreFn, score_comparisons
from rlhf.collect.workbench import Workbench, WorkbenchError
from rlhf.versions import ModelVersion
from storage import comparisons, scores
from storage.scores import EQUAL_SCORE

DEFAULT_EVAL_FRACTION = 0.1  # rlhf.train.reward's default options.eval_fraction
WORST_COLUMNS = ["comparison_id", "prompt", "model_order", "people_order", "annotators", "pairwise_agreement",
                 "kendall_tau_b", "scores"]


def split_comparisons(comparison_ids, eval_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """(trained, held out) comparison ids exactly as `rlhf.train.common.split_by_comparison`
    splits a snapshot (repeated here so that auditing needs no torch)."""
    ordered = np.array(sorted(set(int(i) for i in comparison_ids)), dtype=np.int64)
    if eval_fraction <= 0 or len(ordered) < 2:
        return set(ordered.tolist()), set()
    n_eval = min(max(int(round(len(ordered) * eval_fraction)), 1), len(ordered) - 1)
    held_out = set(np.random.default_rng(seed).permutation(ordered)[:n_eval].tolist())
    return set(ordered.tolist()) - held_out, held_out


def trained_comparisons(wb: Workbench, version: ModelVersion) -> tuple[set[int], str]:
    """The comparisons a reward version was trained on, and one sentence saying how that
    is known. WorkbenchError when its snapshot is named but cannot be read."""
    snapshot = version.data_snapshot
    if not isinstance(snapshot, str) or not snapshot:
        return set(), (f"{version.name} has no training snapshot in this store: every human ranking counts "
                       "as held out.")
    path = wb.home.root / snapshot
    try:
        ids = pd.read_parquet(path, columns=["comparison_id"])["comparison_id"]
    except (OSError, ValueError, KeyError) as error:
        raise WorkbenchError(f"Cannot read the training snapshot {snapshot} of {version.name} ({error}), "
                             "so its held-out rankings are unknown.") from None
    spec = _spec(path.parent / "spec.json")
    fraction = float((spec.get("options") or {}).get("eval_fraction", DEFAULT_EVAL_FRACTION))
    seed = int((spec.get("config") or {}).get("seed", 0) or 0)
    trained, held = split_comparisons(ids, fraction, seed)
    return trained, (f"{version.name} trained on {len(trained)} comparisons of {snapshot} (it held out "
                     f"{len(held)} of them, eval_fraction {fraction:g}, seed {seed}); every human ranking of any "
                     "other comparison is held out.")


def _spec(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def model_ranks(values: list[float]) -> list[int]:
    return agreement.dense_ranks(values, tolerance=EQUAL_SCORE)


def _pair_counts(people: list[int], model: list[int]) -> tuple[int, int]:
    """(right, wrong) over the completion pairs people ordered strictly and the model did not tie."""
    right = wrong = 0
    for i in range(len(people)):
        for j in range(i + 1, len(people)):
            if people[i] == people[j] or model[i] == model[j]:
                continue
            if (people[i] < people[j]) == (model[i] < model[j]):
                right += 1
            else:
                wrong += 1
    return right, wrong


def audit(wb: Workbench, reward_version: str | None = None, limit: int = 20, score: ScoreFn | None = None,
          sources: tuple[str, ...] = ("human",)) -> dict:
    """The reward version (None: the newest) against held-out human rankings.

    Args:
        wb: the open workbench.
        reward_version: a reward version's name; None for the newest.
        limit: how many comparisons the disagreement list keeps.
        score: when given, `score(prompts, completions, categories) -> rewards` of this version
            (`suggestions.ScoreFn`), used first on the held-out comparisons not scored yet.
        sources: which rankings count as people's ('human'; add 'import' for imported ones).

    Returns:
        dict: version, note (how held out was decided), held_out_rankings,
        held_out_comparisons, scored_rankings, scored_comparisons, missing (held-out
        comparison ids without complete scores), pairwise_agreement, kendall_tau_b (means
        over scored held-out rankings), pair_accuracy, pairs_right, pairs_wrong, and worst
        (DataFrame, WORST_COLUMNS, at most `limit` rows, worst first).
    """
    version = wb.reward_model(reward_version)
    name = version.name
    trained, note = trained_comparisons(wb, version)
    cur = wb.store.cursor()
    ranks = scores.rank_lists(cur, sources)
    held = ranks[~ranks["comparison_id"].isin(trained)].reset_index(drop=True)
    held_ids = sorted(int(i) for i in held["comparison_id"].unique())

    scored = _complete_scores(cur, name, held_ids)
    missing = [i for i in held_ids if i not in scored]
    if missing and score is not None:
        score_comparisons(wb.store, name, missing, score)
        scored = _complete_scores(cur, name, held_ids)
        missing = [i for i in held_ids if i not in scored]

    agreements, taus, right, wrong = [], [], 0, 0
    for comparison_id, people in zip(held["comparison_id"], held["rank_list"]):
        values = scored.get(int(comparison_id))
        if values is None or len(values) != len(people):
            continue
        model, people = model_ranks(values), [int(r) for r in people]
        agreements.append(agreement.pairwise_agreement(people, model))
        taus.append(agreement.kendall_tau_b(people, model))
        more_right, more_wrong = _pair_counts(people, model)
        right, wrong = right + more_right, wrong + more_wrong

    return {
        "version": name, "note": note,
        "held_out_rankings": len(held), "held_out_comparisons": len(held_ids),
        "scored_rankings": len(agreements), "scored_comparisons": len(scored),
        "missing": missing,
        "pairwise_agreement": agreement.nan_mean(agreements), "kendall_tau_b": agreement.nan_mean(taus),
        "pair_accuracy": right / (right + wrong) if right + wrong else math.nan,
        "pairs_right": right, "pairs_wrong": wrong,
        "worst": _worst(cur, held, scored, limit),
    }


def _complete_scores(cur, reward_version: str, comparison_ids: list[int]) -> dict[int, list[float]]:
    """{comparison_id: scores in letter order} of the comparisons the version scored completely."""
    if not comparison_ids:
        return {}
    frame = scores.scores_frame(cur, reward_version, comparison_ids)
    sizes = comparisons.completion_counts(cur, comparison_ids)
    return {int(comparison_id): [float(v) for v in group["score"]]
            for comparison_id, group in frame.groupby("comparison_id")
            if len(group) == sizes.get(int(comparison_id))}


def _worst(cur, held: pd.DataFrame, scored: dict[int, list[float]], limit: int) -> pd.DataFrame:
    rows = []
    for comparison_id, group in held.groupby("comparison_id"):
        values = scored.get(int(comparison_id))
        lists = [[int(r) for r in ranks] for ranks in group["rank_list"]]
        if values is None or len(values) != len(lists[0]):
            continue
        people = lists[0] if len(lists) == 1 else agreement.consensus(lists, "ranked_pairs")
        model = model_ranks(values)
        rows.append({
            "comparison_id": int(comparison_id),
            "prompt": "",
            "model_order": ranking_from_ranks(model).canonical,
            "people_order": ranking_from_ranks(people).canonical,
            "annotators": len(lists),
            "pairwise_agreement": agreement.pairwise_agreement(people, model),
            "kendall_tau_b": agreement.kendall_tau_b(people, model),
            "scores": ", ".join(f"{chr(65 + i)} {v:+.3f}" for i, v in enumerate(values)),
        })
    frame = pd.DataFrame(rows, columns=WORST_COLUMNS)
    if frame.empty:
        return frame
    frame = frame.sort_values(["pairwise_agreement", "kendall_tau_b", "comparison_id"],
                              na_position="last", ignore_index=True).head(limit)
    found = (comparisons.get(cur, int(i)) for i in frame["comparison_id"])
    frame["prompt"] = [comparison.prompt if comparison else "" for comparison in found]
    return frame
