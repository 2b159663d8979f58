"""How many CPU threads the processes beside the server give torch: the one rule for a
training job's worker and for the sampler children, both counting the cores this process
may run on (`available_cores`).

The server shares the machine with them, so one core is left to it: a sampler child
(`rlhf.collect.sampler_process`) always leaves one, since it samples while the annotators'
requests are being answered; a worker leaves one only above two cores, and on one or two
takes them all (the server mostly waits while a job trains, and OMP_WAIT_POLICY=PASSIVE
makes the worker's idle threads yield). `RLHF_WORKER_THREADS=N` sets the worker's number."""

from __future__ import annotations

import os
from collections.abc import Mapping

from rlhf.errors import UserError

ENV_VAR = "RLHF_WORKER_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its affinity, which a container or taskset may
    narrow below os.cpu_count()); 1 where neither says."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS
        return max(1, os.cpu_count() or 1)


def sampler_threads(cores: int) -> int:
    """The torch threads of a sampler child on a machine of `cores` cores: one fewer, at least one."""
    return max(1, cores - 1)


def worker_threads(cores: int, environ: Mapping[str, str] = os.environ) -> int:
    """The torch threads of a worker on a machine of `cores` cores: RLHF_WORKER_THREADS when
    set (a whole number, at least 1), else cores - 1 above two cores, else all of them,
    shared out among a launched job's ranks on this machine (LOCAL_WORLD_SIZE, set by torchrun)."""
    value = environ.get(ENV_VAR, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"{ENV_VAR} must be a whole number of threads, at least 1, not '{value}';"
                            " unset it for the default (one core left to the server above two cores).")
        return int(value)
    ranks_here = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (cores - 1 if cores > 2 else cores) // max(1, ranks_here))
