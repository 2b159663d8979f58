"""`rlhf.train.memory`: when a job recomputes activations instead of keeping them."""

from __future__ import annotations

from rlhf.train import memory


def test_the_estimate_for_smollm2_135m_is_a_little_above_the_measured_megabyte_a_token():
    per_token = memory.activation_bytes_per_token(num_hidden_layers=30, hidden_size=576, intermediate_size=1536)
    assert per_token == 4 * 30 * (8 * 576 + 4 * 1536) == 1_290_240


def test_checkpointing_turns_on_past_a_quarter_of_the_memory_available():
    per_token = 1_000_000
    gib = 2**30
    on, why = memory.needs_checkpointing(16 * 512, per_token, available=16 * gib)   # 7.6 GiB of 16
    assert on and "recomputed" in why and "8192 tokens" in why
    off, why = memory.needs_checkpointing(8 * 150, per_token, available=16 * gib)   # 1.1 GiB of 16
    assert not off and "kept" in why
    assert memory.needs_checkpointing(1000, per_token, available=4 * 10**9 - 1)[0]   # just over 1e9 of 4e9
    assert not memory.needs_checkpointing(1000, per_token, available=4 * 10**9)[0]


def test_unknown_memory_keeps_the_activations():
    assert memory.needs_checkpointing(10**6, 10**6, available=None) == (
        False, "activations about 931.3 GiB; memory available unknown, kept")


def test_available_bytes_reads_meminfo():
    available = memory.available_bytes()
    assert available is None or available > 0
