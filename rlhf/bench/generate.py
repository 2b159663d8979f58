"""Generation benchmark: tokens/s of batched sampling on the default model, beside one
prompt per call as the reference.
"""

from __future__ import annotations

import resource
import statistics
import time

from rlhf.modeling.generate import SamplingParams, sample
from rlhf.modeling.models import load_policy

BENCH_PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about a lighthouse.",
    "Give me three tips for a job interview.",
    "What is the difference between a list and a tuple in Python?",
    "How do vaccines train the immune system?",
    "Suggest a name for a bakery that sells bread made with local grain.",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "How can I make my morning routine less rushed?",
]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_generate(model_dir: str, repeats: int, max_new_tokens: int, with_reference: bool) -> list[dict]:
    """tokens/s of `sample` batched across prompts, beside the same prompts sampled one
    prompt per `generate` call (the reference), in one run."""
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    policy = load_policy(model_dir)
    sample(policy, [[{"role": "user", "content": BENCH_PROMPTS[0]}]], 2, params)  # warm-up
    paths = {"batched across prompts": None}
    if with_reference:
        paths["one prompt per call"] = 1
    rows = []
    for path_name, batch_prompts in paths.items():
        for n_prompts in (1, 4, 8):
            if batch_prompts == 1 and n_prompts == 1:
                continue  # the same call as batched
            conversations = [[{"role": "user", "content": p}] for p in BENCH_PROMPTS[:n_prompts]]
            rates, seconds = [], []
            for repeat in range(repeats):
                start = time.perf_counter()
                result = sample(policy, conversations, 4, SamplingParams(**{**params.as_dict(), "seed": repeat}),
                                batch_prompts=batch_prompts or n_prompts)
                elapsed = time.perf_counter() - start
                rates.append(sum(s.num_tokens for samples in result for s in samples) / elapsed)
                seconds.append(elapsed)
            rows.append({
                "path": path_name,
                "case": f"{n_prompts} prompt{'s' if n_prompts > 1 else ''} x K=4",
                "tokens_per_s": round(statistics.median(rates), 1),
                "seconds": round(statistics.median(seconds), 2),
                "repeats": repeats,
            })
    return rows
