"""New comparisons: the completions of a resolved `SourcePlan` sampled for the prompts that its
generating version has not compared yet, and stored, one comparison per prompt, in one
transaction (with whatever belongs with them)."""

from __future__ import annotations

import random
import secrets
from pathlib import Path
from typing import Callable

from rlhf.checks import require_prompt_set
from rlhf.collect.sources import SourcePlan, sampling_groups
from rlhf.errors import WorkbenchError
from rlhf.modeling.model_cache import ModelCache
from rlhf.modeling.sampling import SamplingParams
from storage import comparisons, prompts
from storage.comparisons import NewCompletion
from storage.db import Store


def sample_here(cache: ModelCache, model_dir: Path, conversations: list[list[dict]], k: int,
                params: SamplingParams):
    """Sample in this process, with the recently used models kept loaded in `cache`."""
    from rlhf.modeling.generate import sample  # torch is imported by the commands that sample

    return sample(cache.policy(model_dir), conversations, k=k, params=params)


def _shuffler(seed: int | None, prompt_id: int, round: int) -> random.Random:
    """The generator that orders one mixed comparison: reproducible with a sampling seed,
    unpredictable without one."""
    if seed is None:
        return random.Random(secrets.randbits(64))
    return random.Random(f"{seed}:{round}:{prompt_id}")


def generate(store: Store, plan: SourcePlan, prompt_set: str | None, n: int, params: SamplingParams,
             sampler: Callable, model_dir: Callable[[str], Path], alongside: Callable | None = None) -> list[int]:
    """Comparisons of `plan.k` completions for up to `n` prompts (of `prompt_set`, None:
    every set) that `plan.primary` has not compared yet, in `plan.round`; returns the new
    comparison ids. `sampler(model_dir, conversations, k, params)` draws each source
    group's samples, for the whole batch, from `model_dir(version)`; a mixed plan's
    completions are then shuffled per comparison (`params.seed` makes that reproducible).
    `alongside(cursor, new_ids)` writes in the same transaction (see `Workbench.generate`)."""
    cur = store.cursor()
    if prompt_set is not None:
        require_prompt_set(prompt_set, prompts.set_names(cur), WorkbenchError)
    todo = prompts.not_compared_by(cur, plan.primary, prompt_set, n)
    if todo.empty:
        return []
    conversations = list(todo["messages"])
    per_prompt: list[list[NewCompletion]] = [[] for _ in conversations]
    for (version, source_params), count in sampling_groups(plan).items():
        samples = sampler(model_dir(version), conversations, count, source_params)
        for completions, drawn in zip(per_prompt, samples):
            completions += [NewCompletion(s.text, version, {**source_params.as_dict(), "dtype": s.dtype},
                                          s.num_tokens, s.finish_reason)
                            for s in drawn]
    created = []
    with store.transaction() as tx:
        for prompt_id, completions in zip(todo["id"], per_prompt):
            if plan.mixed:
                _shuffler(params.seed, int(prompt_id), plan.round).shuffle(completions)
            created.append(comparisons.add(tx, int(prompt_id), completions, round=plan.round))
        if alongside is not None:
            alongside(tx, created)
    return created
