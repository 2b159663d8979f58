"""Settings are dataclasses whose every field carries its help text: `setting` makes such a
field, `help_of` reads the text back (for a tab, a form or a command's --help)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            **kwargs: Any) -> Any:
    """A dataclass field with `default` (or, for a mutable value, `factory`) and its help text.
    Other keyword arguments go to `dataclasses.field` (e.g. compare=False)."""
    if not help:
        raise ValueError("a setting needs its help text")
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def help_of(settings: Any, name: str) -> str:
    """The help text of the field `name` of the settings dataclass (or instance) `settings`."""
    for f in dataclasses.fields(settings):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(f"{type(settings).__name__ if not isinstance(settings, type) else settings.__name__} "
                   f"has no setting named {name}")
