"""The floating-point precision that policies sample and train in, decided once at run time.

bf16 halves the bytes every decoding step reads and, where the hardware multiplies bf16
natively (AMX-BF16 or AVX512-BF16 on x86 CPUs, a CUDA GPU that supports it), it is the
faster path; elsewhere (AVX2-only CPUs, Apple, older GPUs) bf16 is emulated and slower
than fp32, so fp32 stays. `RLHF_PRECISION=fp32|bf16|auto` (default auto) overrides the
choice, say to compare both on one machine. The weights are the same either way (a cast,
no quantisation); each completion records the dtype it was sampled in. Training jobs
take the same choice as bf16 mixed precision (`loading.precision_args`: fp32 weights and
optimiser on the CPU, bf16 matrix products under autocast).

The setting is checked without torch (`requested`: `rlhf serve` refuses a bad value at
once); the GPU check imports torch, so the sampling process, not the server, says what
it samples in. The hardware is asked once per process (the GPU's bf16 support, the CPU's
flags in /proc/cpuinfo), since PPO asks before every minibatch (`loading.autocast`); the
setting is read at every call, so RLHF_PRECISION is honoured whenever it is set.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from rlhf.errors import UserError

ENV_VAR = "RLHF_PRECISION"
CHOICES = ("auto", "bf16", "fp32")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 arithmetic
DTYPE_NAMES = {"bf16": "bfloat16", "fp32": "float32"}
CPUINFO = Path("/proc/cpuinfo")


class PrecisionError(UserError):
    """RLHF_PRECISION holds a value that is not one of CHOICES."""


@dataclass(frozen=True)
class Precision:
    dtype: str  # a torch dtype's name: 'bfloat16' or 'float32'
    reason: str  # why, in a few words, for the line `rlhf serve` and the bench print

    def describe(self) -> str:
        return f"{self.dtype} ({self.reason})"

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def requested(environ=os.environ) -> str:
    """The RLHF_PRECISION setting, checked: auto, bf16 or fp32."""
    value = environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise PrecisionError(f"{ENV_VAR} must be one of {', '.join(CHOICES)}, not '{value}'; unset it for auto.")
    return value


def cpu_bf16_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """The native bf16 flags this CPU reports (empty where it has none or does not say);
    this machine's are read once per process."""
    return list(_machine_cpu_flags()) if cpuinfo == CPUINFO else _flags_in(cpuinfo)


@functools.cache
def _machine_cpu_flags() -> tuple[str, ...]:
    return tuple(_flags_in(CPUINFO))


@functools.cache
def _machine_gpu() -> tuple[bool, bool]:
    """(torch sees a GPU, the GPU supports bf16), asked once per process."""
    import torch

    available = torch.cuda.is_available()
    return available, available and torch.cuda.is_bf16_supported()


def _flags_in(cpuinfo: Path) -> list[str]:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [flag for flag in CPU_BF16_FLAGS if flag in flags]
    return []


def decide(setting: str, on_gpu: bool, gpu_bf16: bool, cpu_flags: list[str]) -> Precision:
    """The choice for a setting and a machine (pure: the tests give it any machine)."""
    if setting != "auto":
        return Precision(DTYPE_NAMES[setting], f"forced by {ENV_VAR}={setting}")
    if on_gpu:
        return (Precision("bfloat16", "auto: the GPU supports bf16") if gpu_bf16
                else Precision("float32", "auto: the GPU lacks bf16"))
    if cpu_flags:
        return Precision("bfloat16", f"auto: the CPU has {', '.join(cpu_flags)}")
    return Precision("float32", "auto: the CPU has no native bf16")


def current(device_type: str | None = None) -> Precision:
    """The precision for sampling on `device_type` ('cuda' or 'cpu'; default: the GPU
    when torch sees one), from RLHF_PRECISION and the hardware."""
    setting = requested()
    if device_type is None or device_type == "cuda":
        available, gpu_bf16 = _machine_gpu()
        on_gpu = available if device_type is None else True
    else:
        on_gpu = gpu_bf16 = False
    return decide(setting, on_gpu, gpu_bf16, [] if on_gpu else cpu_bf16_flags())
