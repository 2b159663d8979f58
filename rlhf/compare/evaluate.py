"""Automatic evaluation of one policy version against another on held-out prompts.

For each of ``n`` prompts, one completion is sampled from version A and one from version
B, and the figures below are measured. Both sides are sampled with the same seed, batch
by batch (common random numbers): two identical versions give identical completions, so
A against itself is an exact tie, and the difference between two versions is measured
with less noise than with independent draws.

This module plans an evaluation from the workbench's versions and prompt sets, runs it
(in the research sampler child, or in this process) and stores and summarises the
results; what is measured, and how, is :mod:`rlhf.modeling.measure`, and how stored
evaluations are shown, :mod:`rlhf.compare.summaries`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from rlhf.checks import require_prompt_set, require_whole
from rlhf.home import BASE_VERSION
from rlhf.modeling.measure import EvaluationError, Plan, measure
from rlhf.modeling.model_cache import ModelCache
from rlhf.modeling.sampling import SamplingParams
from rlhf.preference.messages import as_messages

if TYPE_CHECKING:
    from rlhf.collect.workbench import Workbench

DEFAULT_N = 16
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


# what goes in the evaluations table's metrics (the rest are its own columns)
COLUMNS = ("id", "version_a", "version_b", "reward_version", "prompt_set", "n")


def _policy_path(wb: "Workbench", name: str, what: str) -> Path:
    return wb.model_version(name).policy(f"the {what}").path


def _conversations(prompts: Sequence[Any]) -> list[list[dict]]:
    conversations = [as_messages(prompt) for prompt in prompts]
    if any(not messages or not str(messages[-1].get("content", "")).strip() for messages in conversations):
        raise EvaluationError("Every prompt needs some text.")
    return conversations


def set_prompts(wb: "Workbench", prompt_set: str, n: int) -> list[list[dict]]:
    """The first `n` prompts of a set by id (the same prompts for every evaluation with
    that n, so evaluations of different versions on one set are comparable)."""
    from storage import prompts

    return [list(messages) for messages in _set_rows(wb, prompt_set, n)["messages"]]


def _set_rows(wb: "Workbench", prompt_set: str, n: int) -> "pd.DataFrame":
    """The first `n` prompts of a set by id (messages, category, ...); refused when none."""
    from storage import prompts

    cur = wb.store.cursor()
    require_prompt_set(prompt_set, prompts.set_names(cur), EvaluationError)
    frame = prompts.in_sets(cur, [prompt_set]).head(n)
    if frame.empty:
        raise EvaluationError(f"The prompt set '{prompt_set}' has no prompts.")
    return frame


def plan(source: "Workbench | None", version_a: str | Path, version_b: str | Path, prompts: str | Sequence[Any],
         reward_version: str | Path | None, n: int, reference: str | Path | None = BASE_VERSION) -> Plan:
    """Resolve names (with a workbench) or take directories as they are (without one);
    every refusal is one sentence, before any model is loaded."""
    if source is None:
        if isinstance(prompts, str):
            raise EvaluationError("Without a workbench, give the prompts themselves, not a prompt set's name.")
        conversations = _conversations(prompts)[:n]
        paths = [None if p is None else Path(p) for p in (version_a, version_b, reward_version, reference)]
        for path in paths:
            if path is not None and not path.is_dir():
                raise EvaluationError(f"There is no model directory {path}.")
        return Plan(str(version_a), str(version_b), paths[0], paths[1], None if reward_version is None else
                    str(reward_version), paths[2], None if reference is None else str(reference), paths[3], None,
                    conversations)
    wb = source
    path_a = _policy_path(wb, str(version_a), "version compared")
    path_b = _policy_path(wb, str(version_b), "version compared")
    reference_path = None if reference is None else _policy_path(wb, str(reference), "KL reference")
    if reward_version is None:
        from storage.scores import newest_reward

        reward_version = newest_reward(wb.store.cursor())  # none at all: no reward figures
    reward_path = None
    if reward_version is not None:
        reward_path = wb.reward_model(str(reward_version)).path
    categories = None   # a prompt set's categories: a combination's gate reads which prompts are flagged unsafe
    if isinstance(prompts, str):
        rows = _set_rows(wb, prompts, n)
        prompt_set, conversations = prompts, [list(messages) for messages in rows["messages"]]
        categories = [None if pd.isna(c) else str(c) for c in rows["category"]]
    else:
        prompt_set, conversations = None, _conversations(prompts)[:n]
    return Plan(str(version_a), str(version_b), path_a, path_b, None if reward_version is None else str(reward_version),
                reward_path, None if reference is None else str(reference), reference_path, prompt_set, conversations,
                categories)


def _check(n: int, max_new_tokens: int, temperature: float, top_p: float) -> None:
    require_whole("N", n, 1, error=EvaluationError)
    require_whole("max_new_tokens", max_new_tokens, 1, error=EvaluationError)
    if not 0 < temperature <= 5:
        raise EvaluationError(f"The temperature must be above 0 (the KL estimate needs sampling) and at most 5, "
                              f"not {temperature!r}.")
    if not 0 < top_p <= 1:
        raise EvaluationError(f"top_p must be above 0 and at most 1, not {top_p!r}.")


def evaluate(
    source: "Workbench | None",
    version_a: str | Path,
    version_b: str | Path,
    prompts: str | Sequence[Any],
    reward_version: str | Path | None = None,
    n: int = DEFAULT_N,
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    reference: str | Path | None = BASE_VERSION,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    cache: ModelCache | None = None,
    store: bool = True,
    created_by: str | None = None,
    measurer: Callable[[Plan, SamplingParams], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate policy version A against B (figures and estimator in the module docstring).

    Args:
        source: a :class:`rlhf.collect.workbench.Workbench` (versions, the reward model and the
            reference are version names, `prompts` may name a prompt set, and the result
            is stored in the evaluations table unless `store` is False), or None (they are
            model directories, `prompts` a list, and nothing is stored).
        prompts: a prompt set's name (its first `n` prompts by id) or prompts as text or
            chat messages (the first `n`).
        reward_version: the reward model; None means the newest one, or no reward
            figures when there is none (without a workbench: none).
        n: how many prompts; fewer when the set has fewer.
        seed: seeds both sides' sampling alike.
        reference: the policy the KL is measured from (default ``base``); None: no KL.
        cache: loaded models to reuse; by default loaded for this call.
        created_by: who asked, stored with the evaluation.
        measurer: runs :func:`measure` elsewhere (a server: in its sampler process);
            by default here, with `cache`.

    Returns:
        dict: ``id`` (None when not stored), ``version_a``, ``version_b``,
        ``reward_version``, ``prompt_set``, ``n`` and the figures.

    Raises:
        EvaluationError (or WorkbenchError for an unknown version): one sentence.
    """
    _check(n, max_new_tokens, temperature, top_p)
    chosen = plan(source, version_a, version_b, prompts, reward_version, n, reference)
    params = SamplingParams(temperature=float(temperature), top_p=float(top_p), max_new_tokens=max_new_tokens,
                            seed=int(seed))
    result = measurer(chosen, params) if measurer is not None else measure(chosen, params, cache or ModelCache())
    if source is not None and store:
        from storage import evaluations

        metrics = {key: value for key, value in result.items() if key not in COLUMNS}
        with source.store.transaction() as cur:
            result["id"] = evaluations.add(cur, chosen.version_a, chosen.version_b, chosen.reward_version,
                                           chosen.prompt_set, result["n"], metrics, created_by)
    return result
