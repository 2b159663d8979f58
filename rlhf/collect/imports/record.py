"""The one record every tool's reader yields, and what the readers share.

A reader turns one tool's export into `ToolRanking`s: one person's ranking of K
completions of one prompt, as that tool's files name them. It checks the layout (every
field the tool's documented schema promises, of the right type) and leaves the rest to
`rlhf.collect.imports.plan`: the grammar of the ranks, K, the caps on text, who ranked
what twice. Every text stays the text it was: nothing is parsed as HTML or Markdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.collect.formats import BadRecord, FormatError, checked_text, describe
from rlhf.preference.messages import Message


@dataclass(frozen=True)
class ToolRanking:
    """One annotator's ranking in another tool, before it is checked.

    `where` and `unit` point back into the file ('line 4', 'task 2', 'record 3');
    `ranks` holds one rank per completion in the order of `completions`, 1 the best,
    equal ranks a tie (gaps allowed: 1, 2, 2, 4).
    """

    path: str
    where: int
    unit: str
    messages: tuple[Message, ...]
    completions: tuple[str, ...]
    annotator: str
    ranks: tuple[int, ...]


Parse = Callable[[Any, int], Iterable[ToolRanking]]


def records(path: Path, numbered: Iterable[tuple[int, Any]], unit: str, parse: Parse) -> Iterator[ToolRanking]:
    """The rankings `parse` finds in each numbered record; the first bad record stops the
    read with the file, its number and the reason."""
    for where, record in numbered:
        try:
            yield from list(parse(record, where))
        except BadRecord as problem:
            raise FormatError(path, where, str(problem), unit) from None


def prompt_messages(text: Any, what: str) -> tuple[Message, ...]:
    """A one-turn prompt from a text field that must be there and not be blank."""
    return ({"role": "user", "content": checked_text(text, what)},)


def text(value: Any, what: str) -> str:
    """A completion's text: any string, even empty (saying nothing can be the best answer)."""
    if not isinstance(value, str):
        raise BadRecord(f"{what} must be text, got {describe(value)}")
    return value


def mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadRecord(f"{what} must be an object, got {describe(value)}")
    return value


def sequence(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise BadRecord(f"{what} must be a list, got {describe(value)}")
    return value


def identifier(value: Any, what: str) -> str:
    """A person's or an item's id as text: tools use numbers, UUIDs or names."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise BadRecord(f"{what} must be a name or a number, got {describe(value)}")
    return str(value).strip()
