"""Temperature and top-p (nucleus) sampling without sorting the whole vocabulary each step.

transformers' `TopPLogitsWarper` sorts all ~49k logits of every row at every decoding
step to find the nucleus, the smallest set of likeliest tokens whose probability reaches
top_p: 18% of a step on the default model. The nucleus almost always lies among a few
hundred tokens, so `NucleusWarper` looks for it among the `PREFILTER_K` likeliest first
(`topk`, then a cumulative sum over those only; the probabilities are still normalised
over the full vocabulary). Where those hold less than top_p of the mass (a flat
distribution: the nucleus reaches past them), that row falls back to the full sort, so
the kept set is the plain top-p nucleus in every case; only float rounding at the exact
boundary can differ from transformers' order of summation (ascending over the whole
vocabulary), which a seeded call does not notice in practice. The logits left in the
nucleus are untouched, so the draw that follows is transformers' own.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

PREFILTER_K = 256  # tokens searched for the nucleus before the full-sort fallback


class NucleusWarper(LogitsProcessor):
    """Divide by `temperature`, then keep only the top-p nucleus of each row (others
    -inf), as transformers' TemperatureLogitsWarper then TopPLogitsWarper do (at least
    one token is kept). Passed to `generate` as a logits processor, with generate's own
    temperature, top-k and top-p switched off."""

    def __init__(self, temperature: float, top_p: float, k: int = PREFILTER_K):
        if temperature <= 0 or not 0 < top_p <= 1 or k < 1:
            raise ValueError(f"Nucleus sampling needs temperature > 0, 0 < top_p <= 1 and k >= 1, "
                             f"not {temperature}, {top_p}, {k}.")
        self.temperature, self.top_p, self.k = temperature, top_p, k
        self._exact = TopPLogitsWarper(top_p=top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature
        if self.top_p >= 1:
            return scores
        top, top_ids = scores.topk(min(self.k, scores.shape[-1]), dim=-1)  # descending
        probs = (top - scores.logsumexp(dim=-1, keepdim=True)).exp()
        likelier = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each
        keep = likelier < self.top_p
        keep[:, 0] = True
        kept = torch.full_like(scores, float("-inf")).scatter_(1, top_ids, top.masked_fill(~keep, float("-inf")))
        beyond = (probs.sum(dim=-1) < self.top_p).nonzero().squeeze(1)  # the nucleus reaches past the top k
        if beyond.numel():
            kept[beyond] = self._exact(input_ids[beyond], scores[beyond])
        return kept
