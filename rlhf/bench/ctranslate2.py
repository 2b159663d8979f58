"""CTranslate2, the fastest CPU engine we know of, as the in-run reference of
`python -m rlhf.bench generate` (int8 and float32 on the same model and prompts).

CTranslate2 is in the `bench` extra, not a runtime dependency. Its converter turns the
local model directory into a CTranslate2 model once (float32 weights; int8 is quantised
when the model is loaded with compute_type='int8'), cached under
~/.cache/rlhf-workbench/ctranslate2 keyed by the model's path and weights' mtime, so
nothing is downloaded and later runs start at once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

COMPUTE_TYPES = ("int8", "float32")


def version() -> str | None:
    """The installed CTranslate2's version, None when it is not installed."""
    try:
        import ctranslate2
    except ImportError:
        return None
    return ctranslate2.__version__


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "rlhf-workbench" / "ctranslate2"


def converted(model_dir: Path, root: Path | None = None) -> Path:
    """The CTranslate2 conversion of `model_dir` (made on first use, written whole or not at all)."""
    from ctranslate2.converters import TransformersConverter

    model_dir = Path(model_dir).resolve()
    stamp = max(p.stat().st_mtime_ns for p in model_dir.glob("*.safetensors"))
    digest = hashlib.sha256(f"{model_dir}:{stamp}".encode()).hexdigest()[:12]
    root = root or cache_root()
    target = root / f"{model_dir.name}-{digest}"
    if not (target / "model.bin").is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        TransformersConverter(str(model_dir), low_cpu_mem_usage=True).convert(str(staging), force=True)
        staging.rename(target)
    return target


class Engine:
    """`engine(prompt_ids, k, params) -> tokens generated`: K samples of each tokenised prompt
    in one `generate_batch`, at the workbench's temperature and top-p over the full
    vocabulary, tokens counted up to and including EOS as `rlhf.modeling.generate` counts them."""

    def __init__(self, model_path: Path, compute_type: str, threads: int, tokenizer, eos_ids: list[int]):
        import ctranslate2

        self._ctranslate2 = ctranslate2
        self.generator = ctranslate2.Generator(str(model_path), device="cpu", compute_type=compute_type,
                                               intra_threads=threads)
        self.tokenizer, self.eos_ids = tokenizer, eos_ids

    def __call__(self, prompt_ids: list[list[int]], k: int, params) -> int:
        if params.seed is not None:
            self._ctranslate2.set_random_seed(params.seed)
        starts = [self.tokenizer.convert_ids_to_tokens(ids) for ids in prompt_ids for _ in range(k)]
        results = self.generator.generate_batch(
            starts, max_length=params.max_new_tokens, sampling_topk=0, sampling_topp=params.top_p,
            sampling_temperature=params.temperature, include_prompt_in_result=False, return_end_token=True,
            end_token=self.eos_ids)
        return sum(len(result.sequences_ids[0]) for result in results)
