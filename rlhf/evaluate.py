"""Automatic evaluation of one policy version against another on held-out prompts.

For each of ``n`` prompts, one completion is sampled from version A and one from version
B, and the figures below are measured. Both sides are sampled with the same seed, batch
by batch (common random numbers): two identical versions give identical completions, so
A against itself is an exact tie, and the difference between two versions is measured
with less noise than with independent draws.

Figures (the keys of the dict :func:`evaluate` returns; ``_a`` / ``_b`` per side):

- ``win_rate``: the share of prompts where the reward model scores A's completion above
  B's, a tie (scores closer than ``rlhf.scoring.EQUAL_SCORE``) counting half; with
  ``wins``, ``ties``, ``losses``. Like AlpacaEval's win rate, with a reward model as the
  judge. None without a reward model.
- ``mean_reward_a``/``_b``: the reward model's mean score (offset subtracted, see
  :mod:`rlhf.scoring`), None without a reward model.
- ``mean_length_a``/``_b``: mean generated tokens, up to and including the EOS;
  ``eos_rate_a``/``_b``: the share of completions that ended with an EOS rather than
  being cut by ``max_new_tokens``.
- ``kl_a``/``_b``: the KL divergence of each version from the reference policy (the
  ``base`` version unless another is named), with ``kl_stderr_a``/``_b`` its standard
  error over prompts. None without a reference.

The KL estimator. For a prompt x and a completion y = (y_1 .. y_T) sampled from the
version pi, ``log pi(y|x) - log pi_ref(y|x) = sum_t [log pi(y_t | x, y_<t) - log
pi_ref(y_t | x, y_<t)]`` has expectation KL(pi(.|x) || pi_ref(.|x)) over y ~ pi(.|x):
it is the "k1" estimator of J. Schulman, "Approximating KL Divergence" (2020,
http://joschu.net/blog/kl-approx.html), applied to whole sequences, and the same
quantity as the per-token KL penalty of RLHF's PPO (Ziegler et al. 2019, "Fine-Tuning
Language Models from Human Preferences", eq. 2; Stiennon et al. 2020) summed over the
response. ``kl_a`` is its mean over the n prompts, evaluated on the version's own
samples: an unbiased estimate of E_x KL(pi(.|x) || pi_ref(.|x)), in nats per completion.
Single values can be negative (k1 is unbiased, not positive); the mean of many is not,
in expectation. Both models' logits are divided by the sampling temperature, so the KL
is between the distributions sampled from; sampling uses no top-p truncation by default
(``top_p=1``), since with nucleus sampling the samples come from a truncated distribution
that the log-probabilities do not describe. The reference must share the version's
tokenizer (versions trained from one base do).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rlhf.errors import UserError
from rlhf.home import BASE_VERSION
from rlhf.model_cache import ModelCache
from rlhf.sampling import SamplingParams

if TYPE_CHECKING:  # torch is imported by the functions that need it
    import torch

    from rlhf.generate import Generated
    from rlhf.models import Policy
    from rlhf.workbench import Workbench

DEFAULT_N = 16
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
BATCH_PROMPTS = 8
SIDES = ("a", "b")
# what goes in the evaluations table's metrics (the rest are its own columns)
COLUMNS = ("id", "version_a", "version_b", "reward_version", "prompt_set", "n")


class EvaluationError(UserError):
    """An evaluation that cannot run, in one sentence."""


@dataclass(frozen=True)
class Side:
    """One version's completions of the evaluation's prompts, in prompt order."""

    texts: list[str]
    lengths: list[int]       # generated tokens up to and including the EOS
    finished: list[bool]     # ended with an EOS
    logprobs: list[float]    # sum over the completion's tokens of log pi_version
    ref_logprobs: list[float] | None  # the same under the reference, None without one


# -- the maths ----------------------------------------------------------------------------


def sequence_logprobs(model, generated: "Generated", temperature: float = 1.0, batch_size: int = 8) -> "torch.Tensor":
    """Sum of log-probabilities of each row's response tokens under `model`: ``[b]``.

    `generated` holds left-padded prompts and responses (:func:`rlhf.generate.generate_tokens`);
    only the tokens of `response_mask` count. Position ids follow the attention mask as in
    `generate`, so left padding changes nothing; logits are divided by `temperature`. A
    prompt-tuned (PEFT) model prepends its virtual tokens: only the last positions are read.
    """
    import torch

    prompt_ids, response_ids = generated.prompt_ids, generated.response_ids
    length = response_ids.shape[1]
    if length == 0:
        return torch.zeros(response_ids.shape[0])
    device = next(model.parameters()).device
    prompt_learning = bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))
    sums = []
    with torch.inference_mode():
        for start in range(0, response_ids.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            input_ids = torch.cat([prompt_ids[rows], response_ids[rows]], dim=1).to(device)
            mask = torch.cat([generated.prompt_mask[rows], generated.response_mask[rows]], dim=1).to(device)
            extra: dict[str, Any] = {}
            if not prompt_learning:  # PEFT ignores position ids (with a warning) for soft prompts
                extra["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=length + 1,
                           **extra).logits[:, -(length + 1):-1]
            log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
            tokens = response_ids[rows].to(device)
            picked = torch.gather(log_probs, 2, tokens.unsqueeze(-1)).squeeze(-1)
            sums.append((picked * generated.response_mask[rows].to(device)).sum(dim=1).cpu())
    return torch.cat(sums)


def kl_k1(logprobs: Sequence[float], ref_logprobs: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) over samples of the k1 estimate ``log p - log p_ref``
    (see the module docstring); the standard error is NaN for fewer than two samples."""
    diffs = [float(p) - float(q) for p, q in zip(logprobs, ref_logprobs)]
    if not diffs:
        return math.nan, math.nan
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, math.nan
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(variance / len(diffs))


def win_counts(rewards_a: Sequence[float], rewards_b: Sequence[float], margin: float | None = None) -> dict[str, Any]:
    """Wins, ties and losses of A against B prompt by prompt, and the win rate with ties
    as half (NaN for no prompts)."""
    from rlhf.scoring import EQUAL_SCORE

    margin = EQUAL_SCORE if margin is None else margin
    wins = sum(a - b >= margin for a, b in zip(rewards_a, rewards_b))
    losses = sum(b - a >= margin for a, b in zip(rewards_a, rewards_b))
    n = min(len(rewards_a), len(rewards_b))
    ties = n - wins - losses
    return {"wins": wins, "ties": ties, "losses": losses, "win_rate": (wins + 0.5 * ties) / n if n else math.nan}


def _mean(values: Sequence[float] | None) -> float | None:
    return None if values is None else (sum(values) / len(values) if values else math.nan)


# -- sampling ---------------------------------------------------------------------------


def decoded(policy: "Policy", generated: "Generated") -> list[tuple[str, int, bool]]:
    """(text, tokens up to and including the EOS, ended with an EOS) for each row."""
    rows = []
    for ids, mask, done in zip(generated.response_ids, generated.response_mask, generated.has_eos):
        kept = ids[: int(mask.sum())]
        rows.append((policy.tokenizer.decode(kept, skip_special_tokens=True).strip(), int(mask.sum()), bool(done)))
    return rows


def draw(policy: "Policy", conversations: list[list[dict]], params: SamplingParams, reference: "Policy | None" = None,
         batch_prompts: int = BATCH_PROMPTS) -> Side:
    """One completion per conversation from `policy`, seeded with `params.seed` (batch by
    batch, so two calls with one seed and one model draw the same), with the completions'
    log-probabilities under it and under `reference`."""
    import torch

    from rlhf.generate import generate_tokens

    if params.seed is not None:
        torch.manual_seed(params.seed)
    texts, lengths, finished, logprobs, ref_logprobs = [], [], [], [], []
    temperature = params.temperature if params.temperature > 0 else 1.0
    for start in range(0, len(conversations), batch_prompts):
        generated = generate_tokens(policy, conversations[start:start + batch_prompts], params, k=1)
        for text, length, done in decoded(policy, generated):
            texts.append(text)
            lengths.append(length)
            finished.append(done)
        logprobs += sequence_logprobs(policy.model, generated, temperature).tolist()
        if reference is not None:
            ref_logprobs += (logprobs[-len(generated.has_eos):] if reference is policy else
                             sequence_logprobs(reference.model, generated, temperature).tolist())
    return Side(texts, lengths, finished, logprobs, ref_logprobs if reference is not None else None)


def answer(cache: ModelCache, model_dirs: Sequence[Path], messages: list[dict], params: SamplingParams,
           reward_dir: Path | None = None) -> list[tuple[str, int, bool, float | None]]:
    """One answer to one conversation from each model (each seeded alike when
    `params.seed` is set): (text, tokens, ended with an EOS, the reward model's score or
    None). What the Compare tab's side by side and arena battles show; a server runs it
    in its research sampler process."""
    import torch

    from rlhf.generate import generate_tokens

    rows = []
    with cache.lock:
        for path in model_dirs:
            policy = cache.policy(path)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            [(text, tokens, done)] = decoded(policy, generate_tokens(policy, [messages], params))
            rows.append((text, tokens, done))
        scores = [None] * len(rows)
        if reward_dir is not None:
            scores = [float(s) for s in cache.scorer(reward_dir).score([messages] * len(rows), [r[0] for r in rows])]
    return [(*row, score) for row, score in zip(rows, scores)]


# -- what is evaluated ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Names (for the store) and directories of what one evaluation uses."""

    version_a: str
    version_b: str
    path_a: Path
    path_b: Path
    reward_version: str | None
    reward_path: Path | None
    reference: str | None
    reference_path: Path | None
    prompt_set: str | None
    conversations: list[list[dict]]


def _policy_path(wb: "Workbench", name: str, what: str) -> Path:
    version = wb.model_version(name)
    if version["kind"] != "policy":
        raise EvaluationError(f"'{name}' is a reward model; the {what} must be a policy version.")
    return wb.home.root / version["path"]


def _conversations(prompts: Sequence[Any]) -> list[list[dict]]:
    from rlhf.scoring import as_messages

    conversations = [as_messages(prompt) for prompt in prompts]
    if any(not messages or not str(messages[-1].get("content", "")).strip() for messages in conversations):
        raise EvaluationError("Every prompt needs some text.")
    return conversations


def set_prompts(wb: "Workbench", prompt_set: str, n: int) -> list[list[dict]]:
    """The first `n` prompts of a set by id (the same prompts for every evaluation with
    that n, so evaluations of different versions on one set are comparable)."""
    from storage import prompts

    cur = wb.store.cursor()
    known = prompts.set_names(cur)
    if prompt_set not in known:
        raise EvaluationError(f"There is no prompt set '{prompt_set}' (known sets: {', '.join(known) or 'none'}).")
    frame = prompts.in_sets(cur, [prompt_set]).head(n)
    if frame.empty:
        raise EvaluationError(f"The prompt set '{prompt_set}' has no prompts.")
    return [list(messages) for messages in frame["messages"]]


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
        reward_path = wb.home.root / wb.reward_model(str(reward_version))["path"]
    if isinstance(prompts, str):
        prompt_set, conversations = prompts, set_prompts(wb, prompts, n)
    else:
        prompt_set, conversations = None, _conversations(prompts)[:n]
    return Plan(str(version_a), str(version_b), path_a, path_b, None if reward_version is None else str(reward_version),
                reward_path, None if reference is None else str(reference), reference_path, prompt_set, conversations)


def _check(n: int, max_new_tokens: int, temperature: float, top_p: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise EvaluationError(f"N must be a whole number of 1 or more, not {n!r}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise EvaluationError(f"max_new_tokens must be a whole number of 1 or more, not {max_new_tokens!r}.")
    if not 0 < temperature <= 5:
        raise EvaluationError(f"The temperature must be above 0 (the KL estimate needs sampling) and at most 5, "
                              f"not {temperature!r}.")
    if not 0 < top_p <= 1:
        raise EvaluationError(f"top_p must be above 0 and at most 1, not {top_p!r}.")


def _same_tokenizer(policy: "Policy", reference: "Policy", names: tuple[str, str]) -> None:
    if policy is not reference and policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise EvaluationError(f"{names[0]} and the reference {names[1]} use different tokenizers, so the KL "
                              "between them cannot be estimated token by token.")


def measure(chosen: Plan, params: SamplingParams, cache: ModelCache) -> dict[str, Any]:
    """The figures of one planned evaluation (``id`` None): sample both sides, score them,
    estimate the KL. Needs no workbench, so a server runs it in its sampler process."""
    started = time.monotonic()
    with cache.lock:
        ref_policy = cache.policy(chosen.reference_path) if chosen.reference_path is not None else None
        sides = {}
        for side, path, name in (("a", chosen.path_a, chosen.version_a), ("b", chosen.path_b, chosen.version_b)):
            policy = cache.policy(path)
            if ref_policy is not None:
                _same_tokenizer(policy, ref_policy, (name, str(chosen.reference)))
            sides[side] = draw(policy, chosen.conversations, params, ref_policy)
        rewards = None
        if chosen.reward_path is not None:
            scorer = cache.scorer(chosen.reward_path)
            rewards = {side: scorer.score(chosen.conversations, sides[side].texts) for side in SIDES}
    result: dict[str, Any] = {
        "id": None, "version_a": chosen.version_a, "version_b": chosen.version_b,
        "reward_version": chosen.reward_version, "prompt_set": chosen.prompt_set, "n": len(chosen.conversations),
        "reference": chosen.reference,
    }
    if rewards is not None:
        result.update(win_counts(rewards["a"], rewards["b"]))
    else:
        result.update({"wins": None, "ties": None, "losses": None, "win_rate": None})
    for side in SIDES:
        drawn = sides[side]
        result[f"mean_reward_{side}"] = _mean(rewards[side]) if rewards is not None else None
        result[f"mean_length_{side}"] = _mean(drawn.lengths)
        result[f"eos_rate_{side}"] = _mean([1.0 if done else 0.0 for done in drawn.finished])
        kl, stderr = kl_k1(drawn.logprobs, drawn.ref_logprobs) if drawn.ref_logprobs is not None else (None, None)
        result[f"kl_{side}"], result[f"kl_stderr_{side}"] = kl, stderr
    result.update({"seed": params.seed, "max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                   "top_p": params.top_p, "seconds": round(time.monotonic() - started, 2)})
    return result


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
        source: a :class:`rlhf.workbench.Workbench` (versions, the reward model and the
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


# -- reading stored evaluations -------------------------------------------------------------


FIGURES = ("win_rate", "mean_reward", "mean_length", "kl")


def flatten(frame) -> "Any":
    """Stored evaluations (storage.evaluations.list_evaluations) as one flat table: the
    columns plus every figure; newest first."""
    import pandas as pd

    rows = []
    for row in frame.to_dict("records"):
        metrics = row.get("metrics") or {}
        rows.append({key: row[key] for key in ("id", "version_a", "version_b", "reward_version", "prompt_set", "n",
                                               "created_by", "created_at")} | metrics)
    return pd.DataFrame(rows)


def per_version(frame) -> "Any":
    """Each side of every stored evaluation as one row per version: ``version``,
    ``opponent``, ``evaluation`` (its id), ``reward_version``, ``reference``, ``win_rate``
    (of this version over the opponent), ``mean_reward``, ``mean_length``, ``kl``; newest
    first. What the per-version plots and the models table show."""
    import pandas as pd

    rows = []
    for row in frame.to_dict("records"):
        metrics = row.get("metrics") or {}
        win_rate = metrics.get("win_rate")
        for side, other in (("a", "b"), ("b", "a")):
            if side == "b" and row["version_a"] == row["version_b"]:
                continue  # a version against itself: one row
            rows.append({
                "version": row[f"version_{side}"], "opponent": row[f"version_{other}"], "evaluation": row["id"],
                "reward_version": row["reward_version"], "reference": metrics.get("reference"),
                "prompt_set": row["prompt_set"], "n": row["n"],
                "win_rate": None if win_rate is None else (win_rate if side == "a" else 1.0 - win_rate),
                "mean_reward": metrics.get(f"mean_reward_{side}"), "mean_length": metrics.get(f"mean_length_{side}"),
                "kl": metrics.get(f"kl_{side}"),
            })
    columns = ["version", "opponent", "evaluation", "reward_version", "reference", "prompt_set", "n", "win_rate",
               "mean_reward", "mean_length", "kl"]
    return pd.DataFrame(rows, columns=columns)


def latest_per_version(frame) -> "Any":
    """The newest evaluation figures of each version (one row per version): for the
    models table. `frame` as for :func:`per_version`."""
    versions = per_version(frame)
    return versions.drop_duplicates("version", keep="first").reset_index(drop=True)


def version_summaries(wb: "Workbench") -> dict[str, str]:
    """Each evaluated version's newest figures as a :func:`summary_line`: what the models
    tables show."""
    from storage import evaluations

    latest = latest_per_version(evaluations.list_evaluations(wb.store.cursor()))
    return {row["version"]: summary_line(row) for row in latest.to_dict("records")}


def tally(result: dict) -> str:
    """'1 win, 0 ties, 2 losses' from an evaluation's counts."""
    words = (("wins", "win", "wins"), ("ties", "tie", "ties"), ("losses", "loss", "losses"))
    return ", ".join(f"{result[key]} {one if result[key] == 1 else many}" for key, one, many in words)


def summary_line(row: dict) -> str:
    """One version's newest figures in a few words, e.g. 'reward 0.31 · KL 2.1 · 54 tok · win 0.62 vs base (#3)'."""
    parts = []
    for key, label, fmt in (("mean_reward", "reward", "{:.3g}"), ("kl", "KL", "{:.3g}"),
                            ("mean_length", "", "{:.0f} tok")):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{label} {fmt.format(value)}".strip())
    if row.get("win_rate") is not None and not (isinstance(row["win_rate"], float) and math.isnan(row["win_rate"])):
        parts.append(f"win {row['win_rate']:.2f} vs {row['opponent']}")
    return " · ".join(parts) + (f" (eval #{row['evaluation']})" if parts else "")
