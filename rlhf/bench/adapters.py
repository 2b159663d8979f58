"""The adapters side by side on DPO: `python -m rlhf.bench adapters [--adapters lora,ia3,...]
[--pairs 96] [--steps 12]`.

One throw-away home on the default model, HH-RLHF pairs (as `rlhf.bench reward_head` draws
them) imported once; then, for each adapter, one DPO job run as the workbench runs it
(snapshot, worker subprocess, registration) with the same pairs, the same held-out
comparisons (`eval_fraction`, seed) and the same fixed budget (`--steps` optimiser steps),
at the adapter's default learning rate (`rlhf.train.schedule`). Reported: trainable
parameters (the adapter prepared on the model as the job prepares it), seconds per step,
the worker's peak memory, and on the held-out pairs TRL's DPO figures: the implicit
reward margin divided by beta (the log-probability margin over the parent, nats) and the
share of pairs it ranks right. Prints figures, never asserts.
"""

from __future__ import annotations

from pathlib import Path

from rlhf.bench.hh import run_on_hh

BETA = 0.1


def trainable_parameters(model_dir: Path, adapter: str) -> tuple[int, int]:
    """(trainable, total) parameters of the default policy with `adapter` as a DPO job
    prepares it (PEFT's wrapping, or the workbench's own freezing and bottlenecks)."""
    from peft import get_peft_model

    from rlhf.modeling import loading

    model = loading.load_causal_lm(model_dir)
    options = {"adapter": adapter}
    config = loading.peft_config(options, "CAUSAL_LM")
    if config is None:
        loading.own_adapter(model, options)
    else:
        model = get_peft_model(model, config)
    counts = [(p.numel(), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trained in counts if trained), sum(n for n, _ in counts)


def bench_adapters(model_dir: Path, data: Path, adapters: list[str], pairs: int, steps: int, eval_fraction: float,
                   max_chars: int, seed: int) -> dict:
    runs = [("dpo", {"adapter": adapter, "max_steps": steps, "eval_fraction": eval_fraction, "seed": seed,
                     "beta": BETA, "guard_prompts": 0, "guard_pairs": 0}) for adapter in adapters]

    def extra(row: dict, settings: dict) -> dict:
        trainable, parameters = trainable_parameters(model_dir, settings["adapter"])
        margin = row.get("eval_margin")
        return {"adapter": settings["adapter"], "trainable": trainable, "parameters": parameters,
                **({} if margin is None else {"eval_margin_nats": margin / BETA})}

    result = run_on_hh(model_dir, data, pairs, max_chars, seed, "adapters", runs, extra)
    return {"data": str(data), **result, "steps": steps, "eval_fraction": eval_fraction, "max_chars": max_chars}


def print_table(result: dict) -> None:
    print(f"DPO on {result['imported']} HH-RLHF pairs (transcripts <= {result['max_chars'] or 'any'} chars),"
          f" {result['eval_fraction']:.0%} held out, {result['steps']} steps each")
    print(f"{'adapter':<20} {'status':<10} {'trainable':>12} {'%':>7} {'s/step':>7} {'peak MiB':>9}"
          f" {'margin (nats)':>13} {'acc':>6}")
    for row in result["runs"]:
        share = 100 * row["trainable"] / row["parameters"]
        margin, accuracy = row.get("eval_margin_nats"), row.get("eval_reward_accuracy")
        print(f"{row['adapter']:<20} {row['status']:<10} {row['trainable']:>12,} {share:>7.3f}"
              f" {row.get('seconds_per_step') or '':>7} {row['peak_rss_mib'] or '':>9}"
              f" {'' if margin is None else f'{margin:+.3f}':>13} {'' if accuracy is None else f'{accuracy:.3f}':>6}")
        if row["error"]:
            print(f"             {row['error']}")
