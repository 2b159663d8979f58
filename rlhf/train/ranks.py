"""Which process of a launched job this is, and what a launch may run.

A job runs one worker process, or several under `RLHF_LAUNCHER` (e.g. `accelerate launch
--multi_gpu --num_processes 2`): the launcher (torchrun underneath) starts one worker per
rank and sets `RANK` and `WORLD_SIZE` for each (torch.distributed's env:// convention,
https://pytorch.org/docs/stable/elastic/run.html#environment-variables). Every rank trains;
only rank 0 writes the job's status, metrics and model (`is_main`), and no rank ever opens
the store. What a launch cannot run is refused before anything loads (`refusal`).
"""

from __future__ import annotations

import os
from typing import Mapping

# methods that are not a TRL Trainer: they would run once per rank, each alone
# (the job runner starts their workers without RLHF_LAUNCHER; this is for a launch by hand)
_ONE_PROCESS = {
    "ppo": "PPO is the workbench's own single-process loop and does not run under a launcher:"
           " run its worker alone (the job runner does; the TRL methods reward, sft, dpo, kto, grpo and rloo"
           " run under one).",
    "reward_head": "reward_head fits a head in one process in seconds and does not run under a launcher:"
                   " run its worker alone (the job runner does).",
}
_SHARDED = ("{how} shards the weights across the ranks, and the workbench saves (merges, scores, measures)"
            " the trained model from one process, which would see only its shard: launch with DDP"
            " (configs/accelerate/ddp.yaml) or DeepSpeed ZeRO-2 (configs/accelerate/zero2.yaml) instead.")


def rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's rank: 0 without a launcher."""
    return int(env.get("RANK", "0") or 0)


def world_size(env: Mapping[str, str] = os.environ) -> int:
    """How many ranks train the job: 1 without a launcher."""
    return int(env.get("WORLD_SIZE", "1") or 1)


def is_main(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process writes the job's status, metrics and model (rank 0)."""
    return rank(env) == 0


def one_process(method: str) -> bool:
    """Whether `method` trains in one process only (its worker is started without a launcher)."""
    return method in _ONE_PROCESS


def sharding(env: Mapping[str, str] = os.environ) -> str | None:
    """"DeepSpeed ZeRO-3" or "FSDP" when the launcher shards the weights, from the variables
    `accelerate launch` sets for its config (ACCELERATE_USE_DEEPSPEED with
    ACCELERATE_DEEPSPEED_ZERO_STAGE, ACCELERATE_USE_FSDP); None otherwise."""
    def yes(name: str) -> bool:
        return env.get(name, "").strip().lower() in ("1", "true", "yes")

    if yes("ACCELERATE_USE_FSDP"):
        return "FSDP"
    if yes("ACCELERATE_USE_DEEPSPEED") and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").strip() == "3":
        return "DeepSpeed ZeRO-3"
    return None


def refusal(method: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Why the job's method cannot run in this launch, as one sentence; None if it can.
    Under one process (no launcher, or a launcher of one) everything runs."""
    if world_size(env) <= 1 and sharding(env) is None:
        return None
    if method in _ONE_PROCESS:
        return _ONE_PROCESS[method]
    how = sharding(env)
    return _SHARDED.format(how=how) if how else None


def prepare_device(env: dict = os.environ) -> None:
    """Several ranks without a CUDA GPU: have accelerate join them over gloo on the CPU
    (ACCELERATE_USE_CPU, read by TrainingArguments). `accelerate launch --multi_gpu` starts
    the ranks on a CPU machine too, but without this each trains alone."""
    import torch

    if world_size(env) > 1 and not torch.cuda.is_available():
        env.setdefault("ACCELERATE_USE_CPU", "true")


def any_rank(flag: bool) -> bool:
    """Whether `flag` is true on any rank (an all-reduce MAX; all ranks must call it at the
    same point), or `flag` itself outside a process group."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def average_gradient(parameter) -> None:
    """Have `parameter`'s gradient averaged over the ranks at each backward pass, as DDP
    does for the parameters of the model it wraps (a parameter outside it would otherwise
    drift apart on each rank). Nothing outside a process group of several ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return

    def averaged(grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad / dist.get_world_size()

    parameter.register_hook(averaged)


# what gloo and NCCL say when the other end of a collective is gone
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "remote worker crashing", "broken pipe",
              "nccl communicator was aborted")


def lost_peer_reason(error: BaseException, rank: int, world: int, step: int) -> str | None:
    """One sentence for a rank whose collective failed because another rank ended (killed,
    or crashed before it could leave its reason); None for any other error."""
    if world <= 1 or not any(words in str(error).lower() for words in _PEER_GONE):
        return None
    return (f"Rank {rank} of {world} lost its connection to another rank at step {step}: that rank ended"
            " (killed, or crashed before it could say why); see the job's log.")
