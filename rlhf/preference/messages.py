"""Chat messages as the workbench keeps them: a list of {role, content} dicts. A prompt is
stored as such a list (or as text for one user turn); data read back from Parquet comes as
numpy arrays and full structs, which `plain` turns back into these messages."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """Parquet hands nested lists back as numpy arrays and structs as dicts with every
    field; turn a cell back into plain lists and {role, content} messages."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict) and "role" in value and "content" in value:
        return {"role": value["role"], "content": value["content"]}
    return value
