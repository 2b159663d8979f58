"""Sampling K completions (rlhf.modeling.generate) on the tiny random Llama, and the nucleus
sampler checked against the exact top-p distribution."""

from __future__ import annotations

import pytest
import torch

from rlhf.modeling.generate import MAX_K, Sample, SamplingParams, sample, to_sample
from rlhf.modeling.sampling import MIN_K
from rlhf.modeling.models import load_policy

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Write a long poem about the sea, the sky and the wind over the hills, please."}],
    [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"},
    ],
    [{"role": "user", "content": "Name three colours."}],
]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(tiny_model_dir)


@pytest.fixture(scope="module")
def lively_policy(tiny_model_dir):
    """The tiny model with its decoder layers re-drawn at a large scale.

    With tied embeddings and small random weights the tiny model only copies its last
    input token (greedy output is '\\n' forever, whatever the prompt), which would make a
    greedy comparison meaningless. Large layer weights make the output depend on the
    whole prompt, so padding mistakes show up as different text."""
    lively = load_policy(tiny_model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in lively.model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
                module.weight.normal_(0.0, 0.5, generator=generator)
    return lively


# -- shapes and bookkeeping ------------------------------------------------------


@pytest.mark.parametrize("k", [MIN_K, 3, MAX_K])
def test_sample_returns_k_samples_per_conversation(policy, k):
    params = SamplingParams(max_new_tokens=5, seed=0)
    result = sample(policy, CONVERSATIONS[:3], k=k, params=params, batch_prompts=2)
    assert len(result) == 3
    for drawn in result:
        assert len(drawn) == k
        for s in drawn:
            assert isinstance(s, Sample)
            assert isinstance(s.text, str)
            assert 1 <= s.num_tokens <= params.max_new_tokens
            assert s.finish_reason in ("eos", "length")


def test_budget_exhausted_is_length(lively_policy):
    # the lively tiny model never emits EOS greedily within 6 tokens on these prompts
    result = sample(lively_policy, CONVERSATIONS[:2], k=2, params=SamplingParams(temperature=0, max_new_tokens=6))
    for drawn in result:
        for s in drawn:
            assert s.finish_reason == "length"
            assert s.num_tokens == 6
            assert s.text  # real tokens, not only whitespace


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 100])
def test_k_outside_range_is_refused(policy, k):
    with pytest.raises(ValueError, match="K must be between"):
        sample(policy, CONVERSATIONS[:1], k=k, params=SamplingParams(max_new_tokens=2, seed=0))


def test_empty_conversation_list_gives_nothing(policy):
    assert sample(policy, [], k=2, params=SamplingParams(max_new_tokens=2, seed=0)) == []


# -- to_sample: where a completion ends -------------------------------------------


def test_to_sample_cuts_at_first_eos(policy):
    tokenizer = policy.tokenizer
    words = tokenizer("Paris is nice", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    row = torch.tensor(words + [eos, eos, eos])  # generate pads after EOS with pad (= EOS here)
    s = to_sample(tokenizer, row, [eos])
    assert s == Sample("Paris is nice", len(words) + 1, "eos")


def test_to_sample_any_of_several_eos_ids(policy):
    tokenizer = policy.tokenizer
    words = tokenizer("one two", add_special_tokens=False)["input_ids"]
    row = torch.tensor(words + [7, 2, 2])
    s = to_sample(tokenizer, row, [2, 7])
    assert s.finish_reason == "eos" and s.num_tokens == len(words) + 1 and s.text == "one two"


def test_to_sample_without_eos_is_length(policy):
    tokenizer = policy.tokenizer
    words = tokenizer("no end in sight", add_special_tokens=False)["input_ids"]
    s = to_sample(tokenizer, torch.tensor(words), [tokenizer.eos_token_id])
    assert s == Sample("no end in sight", len(words), "length")


# -- seeds, temperature, batching -------------------------------------------------


def _texts(result: list[list[Sample]]) -> list[list[str]]:
    return [[s.text for s in drawn] for drawn in result]


def test_seeded_sampling_is_reproducible(policy):
    params = SamplingParams(max_new_tokens=6, seed=1234)
    first = sample(policy, CONVERSATIONS[:2], k=3, params=params)
    second = sample(policy, CONVERSATIONS[:2], k=3, params=params)
    assert first == second
    # sampling, not greedy: the K samples of a prompt are not all the same
    assert any(len(set(texts)) > 1 for texts in _texts(first))


def test_different_seeds_differ(policy):
    a = sample(policy, CONVERSATIONS[:2], k=3, params=SamplingParams(max_new_tokens=6, seed=1))
    b = sample(policy, CONVERSATIONS[:2], k=3, params=SamplingParams(max_new_tokens=6, seed=2))
    assert _texts(a) != _texts(b)


def test_unseeded_sampling_varies(policy):
    a = sample(policy, CONVERSATIONS[:1], k=4, params=SamplingParams(max_new_tokens=6))
    b = sample(policy, CONVERSATIONS[:1], k=4, params=SamplingParams(max_new_tokens=6))
    assert _texts(a) != _texts(b)


def test_temperature_zero_is_greedy(lively_policy):
    params = SamplingParams(temperature=0, max_new_tokens=8, seed=None)
    first = sample(lively_policy, CONVERSATIONS[:3], k=4, params=params)
    for drawn in first:
        assert len({s for s in drawn}) == 1, drawn
    # greedy ignores the seed and is the same every time
    again = sample(lively_policy, CONVERSATIONS[:3], k=4, params=SamplingParams(temperature=0, max_new_tokens=8, seed=7))
    assert again == first
    # and different prompts get different answers (the model is not degenerate)
    assert len({drawn[0].text for drawn in first}) == 3


def test_greedy_matches_plain_transformers_generate(lively_policy):
    """sample() at temperature 0 is what transformers' own greedy decoding gives."""
    tokenizer, model = lively_policy.tokenizer, lively_policy.model
    [[ours, _]] = sample(lively_policy, CONVERSATIONS[:1], k=2, params=SamplingParams(temperature=0, max_new_tokens=8))
    text = tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
    reference = to_sample(tokenizer, output[0, inputs["input_ids"].shape[1]:], [tokenizer.eos_token_id])
    assert ours == reference


def test_batching_does_not_change_greedy_output(lively_policy):
    """Prompts of very different lengths in one left-padded batch get what they get alone."""
    params = SamplingParams(temperature=0, max_new_tokens=8)
    alone = sample(lively_policy, CONVERSATIONS, k=2, params=params, batch_prompts=1)
    batched = sample(lively_policy, CONVERSATIONS, k=2, params=params, batch_prompts=4)
    assert batched == alone
    assert len({drawn[0].text for drawn in alone}) == len(CONVERSATIONS)
