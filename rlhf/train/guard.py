"""Guardrails every policy job reports at its end: did it move, and did it move too far?

Three figures, measured against the job's parent (the version it started from):

- ``guard/heldout_accuracy``: the implicit reward accuracy on held-out pairs, split by
  comparison (`eval_fraction`). The implicit reward of a completion y is
  ``log pi(y|x) - log pi_parent(y|x)`` (DPO's, Rafailov et al. 2023, up to beta), so a
  pair counts as right when the job raised the chosen completion's log-probability more
  than the rejected one's, half when both moved alike. It measures the policy itself for
  every method; the reward model's accuracy would not change with the policy. A method
  whose data has no pairs (SFT, GRPO, RLOO, PPO) cannot have one: the job says so in one
  line. At the start (the parent against itself) it is exactly 0.5.
- ``guard/kl``: KL to the parent in nats per completion, the k1 estimate of
  :func:`rlhf.modeling.measure.kl_k1` on a fresh sample per held-out prompt; exactly 0 at
  the start.
- ``guard/repetition``: the share of those samples that repeat themselves
  (:func:`repetition_rate`).

Then one sentence (:func:`verdict`) when the job moved too little (KL near 0, or
held-out accuracy within noise of 0.5) or too far (KL above `max_kl`, repetition above
`max_repetition`), with the setting to change. `guard_prompts` 0 skips the sampling
and `guard_pairs` 0 the accuracy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from rlhf.train import ranks

log = logging.getLogger(__name__)

# A policy within this many nats per completion of its parent has not visibly moved:
# a LoRA step at a useful learning rate moves a 48-token answer by more.
MIN_KL = 0.05

# Below this many held-out pairs an accuracy of 1.0 is still within noise of 0.5 (two
# standard errors of a fair coin, 1/sqrt(n), exceed 0.5 for n < 4): no verdict from it.
MIN_PAIRS = 4

# A held-out accuracy this high is clear learning; a set of pairs too small to tell it from
# 0.5 (two standard errors each way reach both) cannot say the job moved too little.
CLEAR_ACCURACY = 0.75

# A log-probability margin smaller than this (nats) is a tie: the job moved both alike.
TIE = 1e-4

NO_PAIRS = "no held-out accuracy: {method}'s data has no preference pairs to hold out"


@dataclass(frozen=True)
class Figures:
    """What the guardrails measured; None where a figure was not measured."""

    accuracy: float | None = None
    pairs: int = 0
    kl: float | None = None
    kl_stderr: float | None = None
    repetition: float | None = None
    prompts: int = 0

    def metrics(self) -> dict[str, float]:
        """The measured figures (none when nothing was: a job that skips them logs nothing)."""
        values = {"guard/heldout_accuracy": self.accuracy,
                  "guard/heldout_pairs": None if self.accuracy is None else float(self.pairs),
                  "guard/kl": self.kl, "guard/kl_stderr": self.kl_stderr, "guard/repetition": self.repetition,
                  "guard/prompts": None if self.kl is None else float(self.prompts)}
        return {key: value for key, value in values.items() if value is not None and math.isfinite(value)}


# -- pure measures ------------------------------------------------------------------------

def seq_rep(text: str, n: int = 4) -> float:
    """The share of a text's word n-grams that repeat an earlier one: 1 - distinct / all.

    "seq-rep-n" of Welleck et al. 2019, "Neural Text Degeneration with Unlikelihood
    Training" (ICLR 2020, section 5), the complement of Li et al.'s distinct-n ratio; 0
    for a text of fewer than n words (nothing to repeat)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str], n: int = 4, threshold: float = 0.5) -> float:
    """The share of `texts` whose :func:`seq_rep` exceeds `threshold` (more than half of
    their 4-grams repeat: an answer collapsed into a loop); NaN for no texts."""
    if not texts:
        return math.nan
    return sum(seq_rep(text, n) > threshold for text in texts) / len(texts)


def implicit_accuracy(margins: Sequence[float]) -> float:
    """The share of pairs whose implicit reward margin is positive, ties (|margin| <=
    TIE) counting half; NaN for no pairs."""
    if len(margins) == 0:
        return math.nan
    right = sum(1.0 if m > TIE else 0.5 if abs(m) <= TIE else 0.0 for m in margins)
    return right / len(margins)


def within_noise(accuracy: float, pairs: int) -> bool:
    """Whether `accuracy` on `pairs` pairs is within two standard errors of a coin (0.5)."""
    return abs(accuracy - 0.5) <= 2 * 0.5 / math.sqrt(pairs)


def too_few_to_tell(accuracy: float, pairs: int) -> bool:
    """Whether `pairs` pairs are too few to tell `accuracy` from a coin and from clear
    learning (`CLEAR_ACCURACY`) alike: within two standard errors of both."""
    return within_noise(accuracy, pairs) and accuracy + 2 * 0.5 / math.sqrt(pairs) >= CLEAR_ACCURACY


def verdict(figures: Figures, method: str, max_kl: float, max_repetition: float) -> str | None:
    """One sentence when the job moved too far (KL above `max_kl`, repetition above
    `max_repetition`) or too little (held-out accuracy within noise of 0.5; where there is
    no held-out accuracy, KL near 0), with what to try; where the held-out pairs are too few
    to tell chance from learning and the KL shows the job moved, that; None otherwise."""
    online = method in ("ppo", "grpo", "rloo")
    far = []
    if figures.kl is not None and figures.kl > max_kl:
        far.append(f"its KL to the parent is {figures.kl:.3g} nats per completion, above max_kl {max_kl:g}")
    if figures.repetition is not None and figures.repetition > max_repetition:
        far.append(f"{figures.repetition:.0%} of its sampled answers repeat themselves,"
                   f" above max_repetition {max_repetition:g}")
    if far:
        longer = "max_steps" if online else "num_train_epochs"
        leash = " or raise beta (the KL penalty)" if method not in ("sft", "pretrain") else ""
        return (f"This job moved too far: {' and '.join(far)}; try a lower learning_rate or {longer}{leash}.")
    # Held-out accuracy is the measure of what the rankings asked for: clearly above chance,
    # the job moved, however little its short samples differ (a DPO job's first steps raise
    # the margin long before they change what is sampled). Without it, the KL decides.
    little = []
    accuracy_known = figures.accuracy is not None and figures.pairs >= MIN_PAIRS
    if accuracy_known and within_noise(figures.accuracy, figures.pairs):
        little.append(f"its held-out accuracy {figures.accuracy:.2f} on {figures.pairs} pairs is within noise of 0.5")
    kl_flat = figures.kl is not None and (figures.kl < MIN_KL or (figures.kl_stderr is not None
                                                                  and math.isfinite(figures.kl_stderr)
                                                                  and figures.kl < 2 * figures.kl_stderr))
    if kl_flat and (little or not accuracy_known):
        little.append(f"its KL to the parent is {figures.kl:.3g} nats per completion, within noise of 0")
    elif little and too_few_to_tell(figures.accuracy, figures.pairs) and figures.kl is not None:
        return (f"Its held-out accuracy {figures.accuracy:.2f} on {figures.pairs} pairs is too few pairs to tell"
                f" it from chance, and its KL to the parent ({figures.kl:.3g} nats per completion) says it moved:"
                " judge it on more held-out rankings (a higher eval_fraction, or an evaluation in the Compare tab).")
    if little:
        longer = "max_steps" if online else "num_train_epochs"
        return (f"This job moved too little: {' and '.join(little)}; try a higher {longer} or learning_rate"
                " (or more rankings).")
    return None


# -- held-out data ------------------------------------------------------------------------

def kto_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """Pairs of KTO rows: each desirable completion against each undesirable one of the
    same comparison (the same prompt), as `prompt`, `chosen`, `rejected`."""
    rows = []
    if "comparison_id" not in frame.columns or frame.empty:
        return pd.DataFrame(columns=["prompt", "chosen", "rejected"])
    for _, group in frame.groupby("comparison_id", sort=True):
        good, bad = group[group["label"]], group[~group["label"]]
        rows += [{"prompt": g["prompt"], "chosen": g["completion"], "rejected": b["completion"]}
                 for g in good.to_dict("records") for b in bad.to_dict("records")]
    return pd.DataFrame(rows, columns=["prompt", "chosen", "rejected"])


def prompts_of(*frames: pd.DataFrame, limit: int) -> list[list[dict]]:
    """Up to `limit` distinct prompts (message lists), from the first frame first (the
    held-out rows), then the next (training rows, where too few were held out)."""
    seen, chosen = set(), []
    for frame in frames:
        for prompt in frame["prompt"] if "prompt" in frame.columns else []:
            key = repr(prompt)
            if key not in seen and len(chosen) < limit:
                seen.add(key)
                chosen.append(list(prompt))
    return chosen


# -- measuring ----------------------------------------------------------------------------

def measure(inputs, method: str, pairs: pd.DataFrame | None, prompts: list[list[dict]]) -> Figures:
    """The figures for the saved policy in `inputs.out_dir` against its parent
    `inputs.base_path` (both loaded afresh, as the workbench serves them)."""
    import torch

    from rlhf.modeling.logprobs import policy_logprobs
    from rlhf.modeling.measure import draw, kl_k1
    from rlhf.modeling.models import load_policy
    from rlhf.modeling.sampling import SamplingParams

    options = inputs.options
    pairs = None if pairs is None else pairs.head(int(options.get("guard_pairs", 0)))
    prompts = prompts[: int(options.get("guard_prompts", 0))]
    if not ranks.is_main():  # under a launcher the first process measures and reports
        return Figures()
    if (pairs is None or pairs.empty) and not prompts:
        return Figures()
    policy, parent = load_policy(inputs.out_dir), load_policy(inputs.base_path)
    accuracy = None
    if pairs is not None and not pairs.empty:
        inputs.reporter.progress(inputs.reporter.step, inputs.reporter.total, message="measuring held-out accuracy")
        margins = [policy_logprobs(model, list(pairs["prompt"]), list(pairs[side]))
                   for model in (policy, parent) for side in ("chosen", "rejected")]
        accuracy = implicit_accuracy(((margins[0] - margins[1]) - (margins[2] - margins[3])).tolist())
    kl = stderr = repetition = None
    if prompts:
        inputs.reporter.progress(inputs.reporter.step, inputs.reporter.total, message="sampling for the KL")
        params = SamplingParams(temperature=1.0, top_p=1.0, seed=int(inputs.config.get("seed", 0) or 0),
                                max_new_tokens=int(options.get("guard_max_new_tokens", 48)))
        with torch.no_grad():
            side = draw(policy, prompts, params, parent)
        kl, stderr = kl_k1(side.logprobs, side.ref_logprobs)
        repetition = repetition_rate(side.texts)
    return Figures(accuracy, 0 if pairs is None else len(pairs), kl, stderr, repetition, len(prompts))


def report(inputs, method: str, pairs: pd.DataFrame | None, prompts: list[list[dict]]) -> dict[str, Any]:
    """Measure the guardrails, log them (job log and metrics.jsonl, beside the parent's
    own figures at step 0 for the plots) and return them for the final metrics, with
    ``guard/verdict`` (the sentence, when there is one) and ``guard/note`` (what could
    not be measured)."""
    figures = measure(inputs, method, pairs, prompts)
    values: dict[str, Any] = figures.metrics()
    notes = []
    if pairs is None:
        notes.append(NO_PAIRS.format(method=method.upper()))
    elif figures.accuracy is None:
        notes.append("no held-out accuracy: no pairs were held out (guard_pairs 0, eval_fraction 0 or one"
                     " comparison)")
    if figures.kl is None and not inputs.options.get("guard_prompts"):
        notes.append("no KL or repetition: guard_prompts is 0")
    start = {key: value for key, value in (("guard/heldout_accuracy", 0.5), ("guard/kl", 0.0)) if key in values}
    inputs.reporter.metrics(0, start)
    inputs.reporter.metrics(inputs.reporter.step, values)
    shown = ", ".join(f"{key.removeprefix('guard/')} {value:.3g}" for key, value in values.items())
    log.info("Guardrails: %s", shown or "nothing measured")
    for note in notes:
        log.info("Guardrails: %s.", note)
    sentence = verdict(figures, method, float(inputs.options.get("max_kl", math.inf)),
                       float(inputs.options.get("max_repetition", 1.0)))
    if sentence:
        log.warning("%s", sentence)
        values["guard/verdict"] = sentence
    if notes:
        values["guard/note"] = "; ".join(notes) + "."
    return values
