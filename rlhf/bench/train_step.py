"""The precision lever of training, measured: `python -m rlhf.bench train_step`.

One LoRA training step of the default model on a DPO-sized batch (`--pairs` pairs, so
2 x pairs sequences of `--tokens` tokens: the reference forward with the adapter off, then
the policy's forward, backward and AdamW step), in fp32 and under bf16 autocast (what
`loading.precision_args` turns on where the CPU has native bf16), the two taken in turn so
a busy spell on a shared machine falls on both. Prints medians and the ratio; asserts nothing.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

PRECISIONS = {"fp32": None, "bf16 autocast": torch.bfloat16}


def bench_train_step(model_dir: Path, pairs: int, tokens: int, repeats: int, threads: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rlhf.modeling import precision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules="all-linear"))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (2 * pairs, tokens))

    def step(dtype) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            with torch.no_grad(), model.disable_adapter():
                model(input_ids=ids)
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        return time.perf_counter() - started

    for dtype in PRECISIONS.values():  # warm-up: first-call allocations, one-time kernels
        step(dtype)
    seconds: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    for _ in range(repeats):
        for name, dtype in PRECISIONS.items():
            seconds[name].append(step(dtype))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"model": str(model_dir), "pairs": pairs, "tokens": tokens, "threads": threads, "repeats": repeats,
            "cpu_bf16": precision.cpu_bf16_flags(), "chosen": precision.current("cpu").describe(),
            "seconds_per_step": {name: round(value, 2) for name, value in medians.items()},
            "fp32_over_bf16": round(medians["fp32"] / medians["bf16 autocast"], 2)}


def print_result(result: dict) -> None:
    print(f"one LoRA DPO-sized training step: {result['pairs']} pairs x 2 x {result['tokens']} tokens, "
          f"{result['threads']} threads, median of {result['repeats']}, taken in turn")
    print(f"  native bf16 flags: {', '.join(result['cpu_bf16']) or 'none'}; jobs train in {result['chosen']}")
    for name, value in result["seconds_per_step"].items():
        print(f"  {name:<14} {value:>7.2f} s/step")
    print(f"  fp32 / bf16 autocast: {result['fp32_over_bf16']:.2f}x")
