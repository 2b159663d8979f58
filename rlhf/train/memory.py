"""Whether a job keeps its activations or recomputes them: activation checkpointing when
one micro-batch's activations would not fit beside everything else.

Backpropagation keeps every layer's activations of the micro-batch until the backward pass
reaches it, so their size grows with the tokens of the micro-batch: measured on
SmolLM2-135M-Instruct (30 layers, hidden 576, MLP 1536) with LoRA under bf16 autocast on
this project's Xeon, a scalar-head step on 16 sequences of 256 tokens held 6.8 GiB without
checkpointing and 2.8 GiB with it, at about 1.4x the time per step; the default reward job
on HH-RLHF transcripts (16 sequences of up to 512 tokens) grew to 17.5 GiB and was killed
for memory. Recomputing costs a forward pass per step, so it is turned on only where the
activations would take more than `share` of the memory available when the job starts.

Pure: the estimate is from the model's config and the token count; the caller reads the
memory available (`available_bytes`).
"""

from __future__ import annotations

DEFAULT_SHARE = 0.25   # of the memory available at the start of a job


def activation_bytes_per_token(num_hidden_layers: int, hidden_size: int, intermediate_size: int) -> int:
    """Rough bytes kept for the backward pass per token: per layer, about eight hidden-sized
    and four MLP-sized fp32 tensors (the norms' and projections' inputs, attention's output,
    the MLP's gate, up and product). On SmolLM2-135M this gives 1.29 MB a token against the
    ~1.0 MB measured (see the module docstring): on the safe side."""
    return 4 * num_hidden_layers * (8 * hidden_size + 4 * intermediate_size)


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is none: not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def needs_checkpointing(micro_batch_tokens: int, per_token: int, available: int | None,
                        share: float = DEFAULT_SHARE) -> tuple[bool, str]:
    """(checkpointing on?, why, in words for the job's log). `micro_batch_tokens`: the most
    tokens one micro-batch can hold (sequences times the longest, as padded)."""
    needed = micro_batch_tokens * per_token
    if available is None:
        return False, f"activations about {_gib(needed)} GiB; memory available unknown, kept"
    if needed > share * available:
        return True, (f"activations about {_gib(needed)} GiB for {micro_batch_tokens} tokens a micro-batch, over"
                      f" {share:.0%} of the {_gib(available)} GiB available: recomputed (activation checkpointing)")
    return False, f"activations about {_gib(needed)} GiB of {_gib(available)} GiB available: kept"


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f}"
