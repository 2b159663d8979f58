"""Chat messages as the workbench keeps them: a list of {role, content} dicts. A prompt is
stored as such a list (or as text for one user turn); data read back from Parquet comes as
numpy arrays and full structs, which `plain` turns back into these messages."""

from __future__ import annotations

from collections.abc import Mapping
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


Message = dict[str, str]


def as_messages(value: Any, role: str = "user") -> list[Message]:
    """A prompt or completion as chat messages: text becomes one message of `role`, one
    {role, content} dict a list of it, and a list (or the numpy array Parquet gives back)
    of messages is made plain; only `role` and `content` are kept."""
    value = plain(value)
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return [{"role": value.get("role", role), "content": value["content"]}]
    return [{"role": message["role"], "content": message["content"]} for message in value]


def prompt_messages(row: Mapping[str, Any]) -> list[Message]:
    """The conversation a data row prompts with, as a fresh list of messages.

    A ``prompt`` that holds messages is the conversation; a text ``prompt`` gives way to
    ``messages`` when that holds at least one message, and is otherwise a single user turn.
    Columns read back from Parquet or DuckDB carry every struct field, filled with nulls:
    only ``role`` and ``content`` are kept.
    """
    prompt = row.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        return as_messages(prompt)
    messages = row.get("messages")
    # Parquet hands lists back as numpy arrays; a missing value is None or NaN.
    if isinstance(messages, (list, tuple, np.ndarray)) and len(messages) > 0:
        return as_messages(messages)
    return as_messages(row["prompt"])
