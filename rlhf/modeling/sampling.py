"""Sampling parameters, kept free of torch so that commands which only read the store
start quickly."""

from __future__ import annotations

from dataclasses import asdict, dataclass

MIN_K, MAX_K = 2, 8


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)
