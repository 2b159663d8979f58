"""The precision policies sample and train in (rlhf.modeling.precision): chosen from the hardware, forced by
RLHF_PRECISION, recorded with each completion, and reproducible under bf16."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.modeling import precision
from rlhf.modeling.generate import SamplingParams, sample
from rlhf.modeling.models import load_policy
from rlhf.modeling.precision import PrecisionError, cpu_bf16_flags, decide
from rlhf.collect.workbench import Workbench

CONVERSATIONS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Hi"}]]


@pytest.mark.parametrize("setting, on_gpu, gpu_bf16, flags, expected", [
    ("auto", False, False, ["amx_bf16", "avx512_bf16"], "bfloat16"),
    ("auto", False, False, ["avx512_bf16"], "bfloat16"),
    ("auto", False, False, [], "float32"),  # AVX2 only: bf16 would be emulated, slower than fp32
    ("auto", True, True, [], "bfloat16"),
    ("auto", True, False, [], "float32"),
    ("fp32", False, False, ["amx_bf16"], "float32"),  # forced fp32 wins over a bf16 CPU
    ("fp32", True, True, [], "float32"),
    ("bf16", False, False, [], "bfloat16"),
])
def test_decide(setting, on_gpu, gpu_bf16, flags, expected):
    chosen = decide(setting, on_gpu, gpu_bf16, flags)
    assert chosen.dtype == expected
    assert (setting in chosen.reason) if setting != "auto" else chosen.reason.startswith("auto")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(cpuinfo) == ["amx_bf16", "avx512_bf16"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_bf16_flags(cpuinfo) == []
    assert cpu_bf16_flags(tmp_path / "missing") == []


def test_a_bad_setting_is_one_sentence(monkeypatch):
    monkeypatch.setenv(precision.ENV_VAR, "fp8")
    with pytest.raises(PrecisionError, match="RLHF_PRECISION must be one of auto, bf16, fp32, not 'fp8'"):
        precision.current("cpu")


def test_forced_fp32_and_auto_load_what_they_say(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert load_policy(tiny_model_dir, torch.device("cpu")).model.dtype == torch.float32
    monkeypatch.setenv(precision.ENV_VAR, "auto")
    auto = precision.current("cpu")
    assert auto.dtype == ("bfloat16" if cpu_bf16_flags() else "float32")
    assert load_policy(tiny_model_dir, torch.device("cpu")).model.dtype == auto.torch_dtype()


@pytest.fixture(scope="module")
def bf16_policy(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(precision.ENV_VAR, "bf16")
        return load_policy(tiny_model_dir, torch.device("cpu"))


def test_bf16_sampling_is_seeded_and_says_its_dtype(bf16_policy):
    assert bf16_policy.model.dtype == torch.bfloat16
    params = SamplingParams(max_new_tokens=6, seed=7)
    first = sample(bf16_policy, CONVERSATIONS, k=3, params=params)
    assert sample(bf16_policy, CONVERSATIONS, k=3, params=params) == first
    assert {s.dtype for drawn in first for s in drawn} == {"bfloat16"}
    assert any(len({s.text for s in drawn}) > 1 for drawn in first)  # sampled, not greedy


def test_each_completion_records_its_dtype(tiny_home, monkeypatch):
    monkeypatch.setenv(precision.ENV_VAR, "bf16")
    with Workbench(tiny_home) as wb:
        created = wb.generate(n=1, k=2, params=SamplingParams(max_new_tokens=3, seed=1))
        completions = wb.comparison(created[0]).completions
    assert [json.loads(c["sampling"])["dtype"] for c in completions] == ["bfloat16", "bfloat16"]


@pytest.mark.parametrize("flags, setting, bf16", [
    (["amx_bf16", "avx512_bf16"], "auto", True),   # native bf16: autocast pays
    ([], "auto", False),                           # AVX2 only: fp32
    (["amx_bf16"], "fp32", False),                 # RLHF_PRECISION wins, as for sampling
])
def test_training_takes_the_sampling_precision_on_the_cpu(monkeypatch, flags, setting, bf16):
    from rlhf.modeling import loading

    monkeypatch.setattr(loading, "on_gpu", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: flags)
    monkeypatch.setenv(precision.ENV_VAR, setting)
    assert loading.precision_args() == {"bf16": bf16, "fp16": False, "use_cpu": True}
    assert loading.model_dtype() == torch.float32   # fp32 master weights on the CPU either way


@pytest.fixture
def fresh_detection():
    """The hardware asked afresh, before the test and after it (so that what it pretends
    the machine is does not stay cached for the tests after it)."""
    precision._machine_cpu_flags.cache_clear()
    precision._machine_gpu.cache_clear()
    yield
    precision._machine_cpu_flags.cache_clear()
    precision._machine_gpu.cache_clear()


def test_ppo_s_autocast_asks_the_cpu_once_and_the_setting_every_time(monkeypatch, fresh_detection):
    from rlhf.modeling import loading

    reads = []
    monkeypatch.setattr(precision, "_flags_in", lambda path: reads.append(path) or ["amx_bf16"])
    monkeypatch.setattr(loading, "on_gpu", lambda: False)
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    monkeypatch.setenv(precision.ENV_VAR, "auto")
    for _ in range(5):  # one minibatch each
        with loading.autocast(torch.device("cpu")):
            assert (a @ b).dtype == torch.bfloat16
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    with loading.autocast(torch.device("cpu")):
        assert (a @ b).dtype == torch.float32  # RLHF_PRECISION still wins, read at every call
    assert reads == [precision.CPUINFO]
    assert precision.cpu_bf16_flags() == ["amx_bf16"] and reads == [precision.CPUINFO]


def test_the_gpu_is_asked_once(monkeypatch, fresh_detection):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: asked.append(1) or True)
    monkeypatch.setenv(precision.ENV_VAR, "auto")
    assert [precision.current().dtype for _ in range(3)] == ["bfloat16"] * 3
    assert precision.current("cuda").dtype == "bfloat16" and len(asked) == 1
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert precision.current().dtype == "float32"


def test_plain_trl_takes_the_jobs_settings_and_decided_schedule():
    from rlhf.bench.plain_trl import trl_settings

    spec = {"config": {"beta": 0.1, "per_device_train_batch_size": 4, "learning_rate": 5e-5, "num_train_epochs": 1,
                       "output_dir": "/elsewhere", "report_to": "none", "logging_steps": 1}}
    status = {"metrics": {"schedule/learning_rate": 2e-4, "schedule/epochs": 3.0}}
    settings = trl_settings(spec, status, bf16=True, output_dir="/tmp/x")
    assert settings["learning_rate"] == 2e-4 and settings["num_train_epochs"] == 3.0
    assert settings["beta"] == 0.1 and settings["per_device_train_batch_size"] == 4
    assert settings["output_dir"] == "/tmp/x" and settings["bf16"] is True and settings["use_cpu"] is True
