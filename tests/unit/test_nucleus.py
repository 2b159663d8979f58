"""The top-k pre-filtered nucleus (rlhf.modeling.nucleus) keeps what transformers' temperature and
top-p keep: on hand-computed logits, on random ones of every sharpness, and in a seeded
`generate` call."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from rlhf.modeling.nucleus import NucleusWarper

SHARPEN = 20.0  # the tiny model's output made sharp enough that the nucleus often lies within the top k
# probabilities 1/2, 1/4, 1/8, 1/16, 1/16 (exact in binary), shuffled over 5 token ids
PROBS = torch.tensor([[0.0625, 0.5, 0.125, 0.0625, 0.25]])
LOGITS = PROBS.log()


def kept(scores: torch.Tensor) -> list[list[int]]:
    return [sorted(torch.isfinite(row).nonzero().flatten().tolist()) for row in scores]


@pytest.mark.parametrize("top_p, nucleus", [
    (0.5, [1]),  # 1/2 alone reaches 0.5
    (0.7, [1, 4]),  # 1/2 + 1/4 = 0.75
    (0.8, [1, 2, 4]),  # 0.875
    (0.9, None),  # 0.9375: one of the two tied 1/16 is needed, either one
    (1.0, [0, 1, 2, 3, 4]),
])
@pytest.mark.parametrize("k", [2, 3, 5])  # k=2 and 3 fall back to the full sort where the nucleus is wider
def test_hand_computed_nucleus(top_p, nucleus, k):
    out = NucleusWarper(temperature=1.0, top_p=top_p, k=k)(torch.zeros(1, 1, dtype=torch.long), LOGITS.clone())
    if nucleus is None:
        assert len(kept(out)[0]) == 4 and {1, 2, 4} <= set(kept(out)[0])
    else:
        assert kept(out) == [nucleus]
    finite = torch.isfinite(out)
    assert torch.equal(out[finite], LOGITS[finite])  # kept logits are untouched


def test_temperature_is_applied_before_the_nucleus():
    # at temperature 0.5 each probability is squared, then normalised: 64/86, 16/86, 4/86, 1/86, 1/86
    warper = NucleusWarper(temperature=0.5, top_p=0.9, k=3)
    out = warper(torch.zeros(1, 1, dtype=torch.long), LOGITS.clone())
    squared = PROBS.pow(2) / PROBS.pow(2).sum()
    assert squared[0, 1] + squared[0, 4] > 0.9 > squared[0, 1]  # 80/86 = 0.93 reaches 0.9, 64/86 does not
    assert kept(out) == [[1, 4]]
    assert torch.allclose(out[0, [1, 4]], LOGITS[0, [1, 4]] / 0.5)


def _transformers(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    ids = torch.zeros(scores.shape[0], 1, dtype=torch.long)
    return TopPLogitsWarper(top_p)(ids, TemperatureLogitsWarper(temperature)(ids, scores))


@pytest.mark.parametrize("scale", [0.5, 2.0, 5.0, 12.0])  # from flat (full-sort fallback) to sharp
def test_same_nucleus_as_transformers_on_random_logits(scale):
    generator = torch.Generator().manual_seed(int(scale * 10))
    scores = torch.randn(16, 49152, generator=generator) * scale
    ids = torch.zeros(16, 1, dtype=torch.long)
    ours = NucleusWarper(0.8, 0.95)(ids, scores.clone())
    assert torch.equal(ours, _transformers(scores.clone(), 0.8, 0.95))


def test_seeded_generate_is_unchanged_by_the_prefilter(tiny_model_dir):
    """generate with NucleusWarper draws what it draws with transformers' own warpers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(SHARPEN)
    inputs = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    common = dict(do_sample=True, max_new_tokens=12, num_return_sequences=3, pad_token_id=0, eos_token_id=None)
    torch.manual_seed(3)
    plain = model.generate(inputs, temperature=0.8, top_p=0.95, top_k=0, **common)
    warper, full_sorts = NucleusWarper(0.8, 0.95), []
    exact = warper._exact
    warper._exact = lambda ids, scores: (full_sorts.append(len(ids)), exact(ids, scores))[1]
    torch.manual_seed(3)
    ours = model.generate(inputs, temperature=1.0, top_p=1.0, top_k=0,
                          logits_processor=LogitsProcessorList([warper]), **common)
    assert torch.equal(plain, ours)
    assert len({tuple(row.tolist()) for row in plain}) > 1  # sampled, not one certain answer
    assert sum(full_sorts) < 6 * 12  # the pre-filter's own path served some of the 6 rows x 12 steps
