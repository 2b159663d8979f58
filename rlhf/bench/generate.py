"""Generation benchmark: tokens/s of the workbench's sampler beside CTranslate2 int8 and
float32 on the same model, prompts, K and budget (the engines take turns within each
repeat); and, with --batching, batched sampling beside one prompt per call.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from pathlib import Path

import torch

from rlhf.bench import ctranslate2
from rlhf.modeling import precision
from rlhf.modeling.generate import SamplingParams, _eos_ids, mask_through_first_eos, render_prompts, sample
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


ENGINE_K = 4


def _conversations(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": p}] for p in BENCH_PROMPTS[:n]]


def _full_sort_top_p(policy, conversations: list[list[dict]], k: int, params: SamplingParams) -> int:
    """The workbench's call with transformers' own temperature and top-p warpers (a full
    sort of the vocabulary per row and step), as `rlhf.generate` sampled before
    `rlhf.nucleus`: the pre-filter lever, measured. Returns the tokens generated."""
    tokenizer = policy.tokenizer
    tokenizer.padding_side = "left"
    inputs = tokenizer(render_prompts(policy, conversations), return_tensors="pt", padding=True,
                       add_special_tokens=False).to(policy.model.device)
    eos_ids = _eos_ids(policy)
    with torch.inference_mode():
        output = policy.model.generate(**inputs, do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                       top_k=0, num_return_sequences=k, max_new_tokens=params.max_new_tokens,
                                       eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    mask, _ = mask_through_first_eos(output[:, inputs["input_ids"].shape[1]:], eos_ids)
    return int(mask.sum())


def _fp32_policy(source: str):
    """The same model loaded as `RLHF_PRECISION=fp32` would: the bf16 lever, measured."""
    saved = os.environ.get(precision.ENV_VAR)
    os.environ[precision.ENV_VAR] = "fp32"
    try:
        return load_policy(source)
    finally:
        if saved is None:
            del os.environ[precision.ENV_VAR]
        else:
            os.environ[precision.ENV_VAR] = saved


def generation_engines(policy, threads: int, levers: bool) -> tuple[dict, list[str]]:
    """name -> run(conversations, k, params) -> tokens, for the workbench's sampler as
    shipped, the levers when asked, and CTranslate2 int8 and float32 when installed; and
    the lines that say what is missing."""
    dtype = str(policy.model.dtype).removeprefix("torch.")
    engines = {f"workbench sampler ({dtype})":
               lambda conversations, k, params: sum(s.num_tokens for drawn in sample(policy, conversations, k, params)
                                                    for s in drawn)}
    if levers:
        engines[f"  lever off: full-sort top-p ({dtype})"] = lambda c, k, p: _full_sort_top_p(policy, c, k, p)
        if dtype != "float32":
            fp32_policy = _fp32_policy(policy.source)
            engines["  lever off: float32 weights"] = \
                lambda c, k, p: sum(s.num_tokens for drawn in sample(fp32_policy, c, k, p) for s in drawn)
    notes = []
    ct2_version = ctranslate2.version()
    if ct2_version is None:
        notes.append("CTranslate2 is not installed (pip install 'rlhf-workbench[bench]'): no reference engine.")
        return engines, notes
    if policy.model.device.type != "cpu":
        notes.append("CTranslate2 runs on the CPU here; the reference is for CPU runs.")
        return engines, notes
    converted = ctranslate2.converted(Path(policy.source))
    eos_ids = _eos_ids(policy)
    for compute_type in ctranslate2.COMPUTE_TYPES:
        engine = ctranslate2.Engine(converted, compute_type, threads, policy.tokenizer, eos_ids)

        def run(conversations, k, params, engine=engine):
            texts = render_prompts(policy, conversations)
            return engine([policy.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], k, params)

        engines[f"CTranslate2 {ct2_version} {compute_type}"] = run
    return engines, notes


def bench_engines(model_dir: str, repeats: int, max_new_tokens: int, threads: int, levers: bool) -> dict:
    """tokens/s of each engine on the 8 BENCH_PROMPTS x K=4 at temperature 0.8 / top-p 0.95,
    medians over `repeats`, the engines taken in turn within each repeat (so a busy spell
    on a shared machine falls on all of them), with each one's ratio to CTranslate2 int8."""
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    policy = load_policy(model_dir)
    engines, notes = generation_engines(policy, threads, levers)
    conversations = _conversations(len(BENCH_PROMPTS))
    for run in engines.values():  # warm-up: first-call allocations, one-time kernels
        run(conversations[:1], 2, dataclasses.replace(params, max_new_tokens=4))
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for repeat in range(repeats):
        for name, run in engines.items():
            start = time.perf_counter()
            tokens = run(conversations, ENGINE_K, dataclasses.replace(params, seed=repeat))
            rates[name].append(tokens / (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    reference = next((rate for name, rate in medians.items() if name.endswith(" int8")), None)
    rows = [{"engine": name, "tokens_per_s": round(rate, 1),
             "vs_ctranslate2_int8": round(rate / reference, 2) if reference else None} for name, rate in medians.items()]
    return {"precision": precision.current(policy.model.device.type).describe(), "prompts": len(conversations),
            "k": ENGINE_K, "repeats": repeats, "rows": rows, "notes": notes}


def bench_generate(model_dir: str, repeats: int, max_new_tokens: int, with_reference: bool) -> list[dict]:
    """tokens/s of `sample` batched across prompts, beside the same prompts sampled one
    prompt per `generate` call (the reference), in one run."""
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    policy = load_policy(model_dir)
    sample(policy, _conversations(1), 2, params)  # warm-up
    paths = {"batched across prompts": None}
    if with_reference:
        paths["one prompt per call"] = 1
    rows = []
    for path_name, batch_prompts in paths.items():
        for n_prompts in (1, 4, 8):
            if batch_prompts == 1 and n_prompts == 1:
                continue  # the same call as batched
            conversations = _conversations(n_prompts)
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


def print_engines(model: str, threads: int, max_new_tokens: int, result: dict) -> None:
    print(f"generation: {model}, {result['prompts']} prompts x K={result['k']}, {max_new_tokens} new tokens, "
          f"temperature 0.8 / top-p 0.95, {threads} threads, median of {result['repeats']}")
    print(f"  the workbench samples in {result['precision']}")
    print(f"  {'engine':<40} {'tokens/s':>9} {'vs CT2 int8':>12}")
    for row in result["rows"]:
        ratio = "" if row["vs_ctranslate2_int8"] is None else f"{row['vs_ctranslate2_int8']:.2f}x"
        print(f"  {row['engine']:<40} {row['tokens_per_s']:>9.1f} {ratio:>12}")
    for note in result["notes"]:
        print(f"  {note}")
