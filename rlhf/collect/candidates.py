"""The queue's 'thompson' selection: sample M candidates per prompt, show the K that double
Thompson sampling over an ensemble of reward heads picks, keep the other M - K unshown.

Following Dwaracherla et al. (2024, "Efficient Exploration for LLMs"): the annotators are
asked about the completions that some plausible reward function rates best, which teaches
the reward model more per ranking than K completions at random (see
`rlhf.preference.thompson` for the variant, `rlhf.train.head_ensemble` for the ensemble).

Everything heavy runs in the pre-generator's sampler child (`SamplerProcess.choose`):
sampling, embedding the rankings and the candidates with the frozen base, fitting the
heads. This process only reads the rankings from the store and writes the comparisons
and the unshown candidates. Until there are enough rankings to fit the ensemble
(`EnsembleConfig.min_rankings`) the child picks K at random and says so, and so does the
Queue tab's status line (`note`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rlhf.home import BASE_VERSION, Home
from rlhf.collect.annotation import Annotation, QueueConfig
from rlhf.modeling.sampling import SamplingParams
from rlhf.preference.thompson import Candidates, Ranked
from storage import queue
from storage.comparisons import NewCompletion

MAX_RANKINGS = 2000  # the newest rankings the ensemble is fitted on: a fit stays seconds, not minutes
FEATURES_DIR = "features"  # under the home, shared with `rlhf train reward_head`'s cache


class CandidateChooser:
    """A sampler for `Workbench.generate` that draws M candidates of each conversation in
    the child, has the child choose K of them, returns those and keeps the rest (in
    `unshown`, one list per conversation, across calls in the order they were made)."""

    def __init__(self, child, version: str, base_dir: Path, cache_root: Path, ranked: list, m: int, seed: int):
        self.child, self.version, self.base_dir, self.cache_root = child, version, base_dir, cache_root
        self.ranked, self.m, self.seed = ranked, m, seed
        self.unshown: list[list[tuple[int, NewCompletion]]] = []
        self.chosen_by: list[str] = []  # per conversation: 'thompson' or 'random'
        self.stored = 0  # of `unshown`, the lists already written beside their comparison

    def __call__(self, model_dir: Path, conversations: list[list[dict]], k: int, params: SamplingParams):
        drawn = self.child.sample(model_dir, conversations, self.m, params)
        candidates = [Candidates(conversation, [s.text for s in row]) for conversation, row in zip(conversations, drawn)]
        chosen, fitted = self.child.choose(self.base_dir, self.cache_root, self.ranked, candidates, k,
                                           self.seed + len(self.unshown))
        for row, picked in zip(drawn, chosen):
            self.unshown.append([(j, NewCompletion(s.text, self.version, {**params.as_dict(), "dtype": s.dtype},
                                                   s.num_tokens, s.finish_reason))
                                 for j, s in enumerate(row) if j not in picked])
            self.chosen_by.append("thompson" if fitted else "random")
        return [[row[j] for j in picked] for row, picked in zip(drawn, chosen)]

    def store_unshown(self, cur, comparison_ids: list[int]) -> None:
        """`Workbench.generate`'s `alongside`: the unshown candidates of the conversations
        just sampled, beside the comparisons made of their shown ones (same order), in the
        transaction that adds those."""
        pending = slice(self.stored, self.stored + len(comparison_ids))
        for comparison_id, rest, chosen_by in zip(comparison_ids, self.unshown[pending], self.chosen_by[pending]):
            queue.add_unshown(cur, comparison_id, rest, chosen_by)
        self.stored += len(comparison_ids)


def ranked_for_ensemble(annotation: Annotation) -> list:
    """The newest `MAX_RANKINGS` rankings as the ensemble reads them (prompt, texts, ranks)."""
    frame = annotation.wb.rankings(newest=MAX_RANKINGS)
    return [Ranked(list(row.messages), [str(t) for t in row.completions], [int(r) for r in row.ranks])
            for row in frame.itertuples()]


def thompson_batch(annotation: Annotation, config: QueueConfig, params: SamplingParams, plan, wanted: int,
                   child, batch: Callable) -> tuple[list[int], str | None]:
    """Up to `wanted` new comparisons whose K completions were chosen from `config.candidates`
    by the child (`batch` is `rlhf.collect.pregenerate.queue_batch`); the unshown candidates
    are stored beside them, in the same transaction. Returns the new ids and a note for the Queue tab when the
    ensemble could not choose yet (too few rankings)."""
    wb = annotation.wb
    home: Home = wb.home
    chooser = CandidateChooser(child, plan.primary, wb.model_version(BASE_VERSION).path, home.root / FEATURES_DIR,
                               ranked_for_ensemble(annotation), config.candidates,
                               seed=annotation.rng.randrange(2**31))
    made = batch(annotation, config, params, plan, wanted, chooser, chooser.store_unshown)
    note = None
    if "random" in chooser.chosen_by:
        note = (f"'thompson' selection: {len(chooser.ranked)} ranking(s) so far, too few (or only ties) to fit "
                "its ensemble of reward heads, so the shown completions were picked at random.")
    return made, note
