"""Benchmarks: `python -m rlhf.bench generate [--model DIR] [--repeats N]`.

Prints medians over repeats, never asserts: this machine is shared, so read the
figures as ratios taken in one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

from rlhf.home import Home, ensure_default_model
from rlhf.generate import Sample, SamplingParams, to_sample, render_prompts, sample
from rlhf.models import Policy, load_policy

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


def plain_generate(policy: Policy, conversations: list[list[dict]], k: int, params: SamplingParams) -> list[list[Sample]]:
    """The reference: fp32 weights and transformers' own `do_sample=True` path."""
    tokenizer = policy.tokenizer
    inputs = tokenizer(render_prompts(policy, conversations), return_tensors="pt", padding=True,
                       add_special_tokens=False).to(policy.model.device)
    with torch.inference_mode():
        output = policy.model.generate(**inputs, do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                       top_k=None, max_new_tokens=params.max_new_tokens, num_return_sequences=k,
                                       pad_token_id=tokenizer.pad_token_id)
    eos = [tokenizer.eos_token_id]
    rows = [to_sample(tokenizer, row, eos) for row in output[:, inputs["input_ids"].shape[1]:]]
    return [rows[i : i + k] for i in range(0, len(rows), k)]


def bench_generate(model_dir: str, repeats: int, max_new_tokens: int, with_reference: bool) -> list[dict]:
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    paths = {"workbench sample() (nucleus in a logits processor)": (load_policy(model_dir), sample)}
    if with_reference:
        reference = load_policy(model_dir)
        reference.tokenizer.padding_side = "left"
        paths["plain generate(do_sample=True)"] = (reference, plain_generate)
    rows = []
    for path_name, (policy, generate) in paths.items():
        generate(policy, [[{"role": "user", "content": BENCH_PROMPTS[0]}]], 2, params)  # warm-up
        for n_prompts in (1, 4, 8):
            conversations = [[{"role": "user", "content": p}] for p in BENCH_PROMPTS[:n_prompts]]
            rates, seconds = [], []
            for repeat in range(repeats):
                torch.manual_seed(repeat)
                start = time.perf_counter()
                result = generate(policy, conversations, 4, params)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    generate = sub.add_parser("generate", help="tokens/s of batched sampling on the default model")
    generate.add_argument("--home", default=None, help="workbench home whose base model to use")
    generate.add_argument("--model", default=None, help="model directory or hub id (default: the home's base)")
    generate.add_argument("--repeats", type=int, default=3)
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--no-reference", action="store_true", help="skip the plain fp32 `generate` reference")
    generate.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    model = args.model or str(ensure_default_model(Home.resolve(args.home)))
    rows = bench_generate(model, args.repeats, args.max_new_tokens, not args.no_reference)
    summary = {
        "model": model,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "threads": torch.get_num_threads(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "results": rows,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {model} on {summary['device']} ({summary['threads']} threads), "
          f"max_new_tokens {args.max_new_tokens}, median of {args.repeats}")
    for row in rows:
        print(f"  {row['path']:<48} {row['case']:<16} {row['tokens_per_s']:>7.1f} tokens/s {row['seconds']:>7.2f} s")
    print(f"  peak memory: {summary['peak_rss_mib']} MiB RSS"
          + (f", {summary['peak_cuda_mib']} MiB CUDA" if summary["peak_cuda_mib"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
