"""What the Data tab shows: annotation activity, agreement between annotators on the
orders themselves (ties included), and consensus orderings stored beside the raw
rankings. Every figure can be restricted by prompt set, annotator, model version and
round of data collection (one round per active policy), and `by_round` splits the counts
and agreement figures by round. Closing the loop: annotators' agreement with the reward
model's suggestions they were shown (`suggestion_agreement`), and a reward version
against held-out human rankings (`reward_audit`, see rlhf/collect/reward_audit.py)."""

from __future__ import annotations

import pandas as pd

from rlhf.preference import agreement
from rlhf.collect import reward_audit, suggestions
from rlhf.preference.ranking import ranking_from_ranks
from rlhf.collect.workbench import Workbench
from storage import activity, comparisons, prompts, rounds, scores
from storage import models as model_versions
from storage.activity import Filters

__all__ = ["Filters", "Reports"]


class Reports:
    def __init__(self, wb: Workbench):
        self.wb = wb

    def choices(self) -> dict[str, list]:
        """The values each filter can take, for the page's dropdowns; `rounds` holds
        (number, active version) pairs."""
        cur = self.wb.store.cursor()
        known = rounds.list_rounds(cur)
        return {"prompt_sets": prompts.set_names(cur), "annotators": activity.annotator_names(cur),
                "model_versions": model_versions.names(cur),
                "rounds": [(int(r.round), r.policy) for r in known.itertuples()],
                "reward_versions": scores.reward_versions(cur)}

    def by_round(self, filters: Filters) -> pd.DataFrame:
        """One row per round: round, active_version, started_at, comparisons, ranked,
        rankings, and the agreement figures over that round's comparisons ranked by two or
        more annotators (overlap_items, pairwise_agreement, kendall_tau_b; no consensus, so
        no consensus method)."""
        cur = self.wb.store.cursor()
        frame = activity.counts_per_round(cur, filters)
        ranks = activity.rank_lists(cur, filters)
        if not ranks.empty:
            in_round = comparisons.rounds_of(cur, list(ranks["comparison_id"].unique()))
            ranks = ranks.assign(round=ranks["comparison_id"].map(in_round))
        figures = []
        for number in frame["round"]:
            subset = ranks[ranks["round"] == number] if not ranks.empty else ranks
            measured = agreement.pairwise_figures(subset)
            figures.append({"overlap_items": measured["items"],
                            "pairwise_agreement": measured["pairwise_agreement"],
                            "kendall_tau_b": measured["kendall_tau_b"]})
        return pd.concat([frame, pd.DataFrame(figures, index=frame.index,
                                              columns=["overlap_items", "pairwise_agreement", "kendall_tau_b"])],
                         axis=1)

    def activity(self, filters: Filters) -> dict[str, pd.DataFrame]:
        cur = self.wb.store.cursor()
        return {"per_annotator": activity.counts_per_annotator(cur, filters),
                "per_day": activity.counts_per_day(cur, filters),
                "recent": activity.recent_rankings(cur, filters)}

    def agreement(self, filters: Filters, method: str = "ranked_pairs") -> dict:
        """Pairwise agreement, Kendall's tau-b, Krippendorff's alpha (ordinal) over the
        comparisons ranked by two or more annotators, and each annotator's tau-b to the
        consensus."""
        return agreement.annotator_agreement(activity.rank_lists(self.wb.store.cursor(), filters), method)

    def suggestion_agreement(self, filters: Filters) -> dict:
        """How far annotators agree with the reward model's suggestion they were shown
        (pairwise agreement, tau-b, exact match; overall, per annotator and per reward
        version, the last beside the same figures for rankings made without a suggestion);
        see `rlhf.collect.suggestions.agreement_with_suggestions`."""
        cur = self.wb.store.cursor()
        return suggestions.agreement_with_suggestions(activity.rank_lists(cur, filters), scores.shown_frame(cur),
                                                      scores.suggestions_frame(cur))

    def reward_audit(self, reward_version: str | None, limit: int = 20) -> dict:
        """A reward version against held-out human rankings (scores already stored; the
        comparisons still to score are in `missing`): see `rlhf.collect.reward_audit.audit`."""
        return reward_audit.audit(self.wb, reward_version, limit)

    def compute_consensus(self, filters: Filters, method: str) -> pd.DataFrame:
        """Merge the rankings of every comparison ranked by two or more annotators with
        `method`, store the result (replacing that method's earlier one) and return it."""
        if method not in agreement.CONSENSUS_METHODS:
            raise ValueError(f"Unknown consensus method '{method}': choose {', '.join(agreement.CONSENSUS_METHODS)}.")
        ranks = activity.rank_lists(self.wb.store.cursor(), filters)
        merged = [
            {"comparison_id": int(comparison_id),
             "ranking": ranking_from_ranks(agreement.consensus([list(r) for r in group["rank_list"]], method)).canonical,
             "annotators": len(group)}
            for comparison_id, group in ranks.groupby("comparison_id") if len(group) >= 2
        ]
        rows = pd.DataFrame(merged, columns=["comparison_id", "ranking", "annotators"])
        with self.wb.store.transaction() as cur:
            activity.replace_consensus(cur, method, rows)
        return activity.consensus_rankings(self.wb.store.cursor(), method)

    def consensus(self, method: str) -> pd.DataFrame:
        return activity.consensus_rankings(self.wb.store.cursor(), method)
