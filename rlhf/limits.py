"""How much one request may ask of the server: the caps on what a client sends, and on
what the server keeps for it.

One user (an annotator who pastes by mistake, a script gone wrong, a crowd worker trying
it on) must not stall or exhaust a server the whole team shares. So every text a client
sends has a length cap, checked before anything parses it (a 20 MB ranking string once
held the server for 24 s and grew it by 1.7 GiB); the server refuses request bodies and
uploads past a size; long sampling runs in a child process with a small concurrency
limit; loaded models and export files are bounded. The API and the tabs read the caps
from here, so a cap is changed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.errors import UserError
from rlhf.settings import setting

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The caps; `LIMITS` holds the defaults the server runs with."""

    ranking_chars: int = setting(64, "a ranking such as 'C > B = D > A' (8 completions with spaces need 29)")
    text_chars: int = setting(20_000, "a better answer, a comment or a skip reason; more is a pasted mistake")
    name_chars: int = setting(200, "a name: model version, prompt set, user, method, format, vote, battle token, seed"
                                   " or date")
    prompt_chars: int = setting(20_000, "a prompt typed into the Compare tab or the API")
    system_prompt_chars: int = setting(4_000, "the system prompt of a prompt version (`rlhf models add-prompt`)")
    guidelines_chars: int = setting(100_000, "the annotation guidelines (Markdown)")
    settings_chars: int = setting(10_000, "settings as text or JSON: the queue's sources, a job's settings lines and"
                                          " data selection")
    body_bytes: int = setting(2 * MIB, "an HTTP request body, uploads aside; larger is answered 413 before it is read")
    upload_bytes: int = setting(100 * MIB, "one uploaded file (prompt or pair imports)")
    corpus_bytes: int = setting(50 * MIB, "the text of a pretraining corpus (`rlhf train pretrain --corpus`), which the"
                                          " job's snapshot holds whole: some 12M tokens, days of training on a CPU")
    research_concurrency: int = setting(1, "side-by-side answers, arena battles and evaluations sampled at once (in"
                                           " their own child process)")
    request_concurrency: int = setting(16, "any other event handled at once")
    loaded_models: int = setting(2, "models kept loaded per cache; the least recently used is freed past this")
    export_ttl_s: int = setting(3600, "seconds an export file is kept for its download")


LIMITS = Limits()


class TooLong(UserError):
    """An input over its cap, refused before it is parsed."""


def check_text(what: str, value: Any, cap: int) -> None:
    """Refuse a text over `cap` characters (None and non-text pass: their own checks
    say what is wrong with them). Only the length is looked at, nothing is parsed."""
    if isinstance(value, str) and len(value) > cap:
        raise TooLong(f"The {what} is {len(value):,} characters long; at most {cap:,} are taken.")


def text_size(value: Any) -> int:
    """Characters of text inside a JSON-like value (keys, strings, numbers' digits), so a
    nested setting is capped as a whole; stops counting early past ten million."""
    total, todo = 0, [value]
    while todo and total < 10_000_000:
        item = todo.pop()
        if isinstance(item, dict):
            todo += list(item.keys()) + list(item.values())
        elif isinstance(item, (list, tuple)):
            todo += list(item)
        elif item is not None:
            total += len(item) if isinstance(item, str) else len(str(item))
    return total


def check_value(what: str, value: Any, cap: int) -> None:
    """`check_text` for a text, a list or a mapping: its text as a whole at most `cap`."""
    size = text_size(value)
    if size > cap:
        raise TooLong(f"The {what} ran to {size:,} characters; at most {cap:,} are taken.")
