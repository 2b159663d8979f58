"""What the sampler child computes for the Compare tab: answers of several versions to one
prompt, and the figures of a planned evaluation of one version against another.

Figures (the keys of the dict :func:`evaluate` returns; ``_a`` / ``_b`` per side):

- ``win_rate``: the share of prompts where the reward model scores A's completion above
  B's, a tie (scores closer than ``storage.scores.EQUAL_SCORE``) counting half; with
  ``wins``, ``ties``, ``losses``. Like AlpacaEval's win rate, with a reward model as the
  judge. None without a reward model.
- ``mean_reward_a``/``_b``: the reward model's mean score (offset subtracted, see
  :mod:`rlhf.modeling.scoring`), None without a reward model.
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
from typing import TYPE_CHECKING, Any, Sequence

from rlhf.errors import UserError
from rlhf.modeling.logprobs import sequence_logprobs
from rlhf.modeling.model_cache import ModelCache
from rlhf.modeling.sampling import SamplingParams

if TYPE_CHECKING:  # torch is imported by the functions that need it
    from rlhf.modeling.generate import Generated
    from rlhf.modeling.models import Policy

BATCH_PROMPTS = 8
SIDES = ("a", "b")


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
    from storage.scores import EQUAL_SCORE

    margin = EQUAL_SCORE if margin is None else margin
    wins = sum(a - b >= margin for a, b in zip(rewards_a, rewards_b))
    losses = sum(b - a >= margin for a, b in zip(rewards_a, rewards_b))
    n = min(len(rewards_a), len(rewards_b))
    ties = n - wins - losses
    return {"wins": wins, "ties": ties, "losses": losses, "win_rate": (wins + 0.5 * ties) / n if n else math.nan}


def _mean(values: Sequence[float] | None) -> float | None:
    return None if values is None else (sum(values) / len(values) if values else math.nan)


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

    from rlhf.modeling.generate import generate_tokens, reprompted

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
            if (reference.system_prompt, reference.template) != (policy.system_prompt, policy.template):
                # a prompt version: the reference sees its own prompt
                generated = reprompted(reference, conversations[start:start + batch_prompts], generated)
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

    from rlhf.modeling.generate import generate_tokens

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
    categories: list[str | None] | None = None   # each prompt's category (a combination's gate reads it)


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
        rewards, dimensions = None, {}
        if chosen.reward_path is not None:
            scorer = cache.scorer(chosen.reward_path)
            scorer.flag_prompts(chosen.conversations, chosen.categories)
            scored = {side: scorer.score_parts(chosen.conversations, sides[side].texts) for side in SIDES}
            rewards = {side: scored[side][0] for side in SIDES}
            dimensions = {name: {"a": scored["a"][1][name], "b": scored["b"][1][name]} for name in scored["a"][1]}
    result: dict[str, Any] = {
        "id": None, "version_a": chosen.version_a, "version_b": chosen.version_b,
        "reward_version": chosen.reward_version, "prompt_set": chosen.prompt_set, "n": len(chosen.conversations),
        "reference": chosen.reference,
    }
    if rewards is not None:
        result.update(win_counts(rewards["a"], rewards["b"]))
    else:
        result.update({"wins": None, "ties": None, "losses": None, "win_rate": None})
    if dimensions:   # a combination of reward models: each one's figures too
        result["dimensions"] = {name: {"win_rate": win_counts(both["a"], both["b"])["win_rate"],
                                       "mean_reward_a": _mean(both["a"]), "mean_reward_b": _mean(both["b"])}
                                for name, both in dimensions.items()}
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
