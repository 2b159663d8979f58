"""Small named rules for values a person types or sends, each refusing in one worded way
(the error class is the caller's, so every layer keeps its own kind of refusal)."""

from __future__ import annotations

from typing import Any, Iterable

from rlhf.errors import UserError


def is_whole(value: Any) -> bool:
    """An int that is not a bool (True is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def typed_whole(value: Any) -> Any:
    """A number typed into a page or sent by a client (8, 8.0, "8") as an int; anything
    else unchanged, for `require_whole` to refuse with its own words."""
    if isinstance(value, bool):
        return value
    try:
        whole = int(value) == float(value)
    except (TypeError, ValueError, OverflowError):
        return value
    return int(value) if whole else value


def require_whole(what: str, value: Any, low: int = 1, high: int | None = None,
                  error: type[UserError] = UserError) -> int:
    """`value` if it is a whole number in [low, high] (no upper bound when `high` is None)."""
    if not is_whole(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of {low} or more"
        raise error(f"{what} must be a whole number {span}, not {value!r}.")
    return value


def require_prompt_set(name: str, known: Iterable[str], error: type[UserError] = UserError) -> str:
    """`name` if it is one of the `known` prompt sets."""
    known = list(known)
    if name not in known:
        raise error(f"There is no prompt set '{name}' (known sets: {', '.join(known) or 'none'}).")
    return name
