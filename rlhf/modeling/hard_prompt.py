"""Prompts as versions (hard prompt tuning): a policy version that is its parent's weights
plus a written system prompt, a template around the user's prompt, or both; no training.

Its directory holds one file, `system_prompt.json`: the parent's directory and the texts.
`rlhf.modeling.models.load_policy` reads it (the parent loaded as usual, the text kept on
the `Policy`), and `conversation` is the one place a policy's system prompt and template
join the messages it answers, so every generation (the queue, side by side, the arena,
evaluation) sees the same prompt. The texts are untrusted: they are only ever a message's
content, never markup, and `checked` bounds them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rlhf.errors import UserError
from rlhf.limits import LIMITS, check_text

PROMPT_FILE = "system_prompt.json"
METHOD = "prompt"   # the method column of a prompt version
SLOT = "{prompt}"   # where a template puts the user's last message
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PromptVersionError(UserError):
    """A prompt version that cannot be registered as asked."""


@dataclass(frozen=True)
class HardPrompt:
    parent: Path                # the parent version's directory (absolute; stored relative to the version)
    system_prompt: str | None   # the system turn it adds
    template: str | None = None  # the user's last message is put at SLOT


def is_prompt_version(path: Path) -> bool:
    return (Path(path) / PROMPT_FILE).is_file()


def read(path: Path) -> HardPrompt:
    data = json.loads((Path(path) / PROMPT_FILE).read_text(encoding="utf-8"))
    parent = (Path(path) / data["parent"]).resolve()   # kept relative: a home copied elsewhere still works
    return HardPrompt(parent, data.get("system_prompt"), data.get("template"))


def write(path: Path, prompt: HardPrompt) -> None:
    """Create the version directory `path` with its prompt file (refused if it exists)."""
    Path(path).mkdir(parents=True, exist_ok=False)
    parent = os.path.relpath(Path(prompt.parent).resolve(), Path(path).resolve())
    (Path(path) / PROMPT_FILE).write_text(
        json.dumps({"parent": parent, "system_prompt": prompt.system_prompt,
                    "template": prompt.template}, ensure_ascii=False),
        encoding="utf-8")


def check_name(name: str) -> str:
    """A new version's name, safe as a directory name; else one sentence."""
    name = str(name or "").strip()
    if not NAME.fullmatch(name) or len(name) > LIMITS.name_chars:
        raise PromptVersionError(f"A version name is letters, digits, '.', '_' and '-' (at most {LIMITS.name_chars}"
                                 " characters), starting with a letter or digit.")
    return name


def checked(text: str | None, what: str = "system prompt") -> str:
    """The system prompt (or template), stripped; refused when empty or longer than
    `LIMITS.system_prompt_chars` (`rlhf.limits.check_text`)."""
    text = str(text or "").strip()
    if not text:
        raise PromptVersionError(f"The {what} is empty; write the text the version should be given.")
    check_text(what, text, LIMITS.system_prompt_chars)
    return text


def check_prompt(system_prompt: str | None, template: str | None) -> tuple[str | None, str | None]:
    """A system prompt, a template holding SLOT, or both (each `checked`)."""
    if system_prompt is None and template is None:
        raise PromptVersionError("Give the version a system prompt, a template, or both.")
    text = None if system_prompt is None else checked(system_prompt)
    if template is None:
        return text, None
    template = checked(template, "template")
    if SLOT not in template:
        raise PromptVersionError(f"The template must say where the user's prompt goes with {SLOT}.")
    return text, template


def training_refusal(name: str, parent: str | None) -> str:
    """Why a prompt version is not a training base (its weights are its parent's)."""
    return (f"'{name}' is a prompt version (the weights of '{parent}' plus a system prompt); train from"
            f" '{parent}' and register the prompt over the result with `rlhf models add-prompt`.")


def one_line(text: str, width: int = 60) -> str:
    """A system prompt as a table cell: unprintable characters (terminal escapes, new
    lines) as spaces, runs of space as one, cut to `width` characters with an ellipsis."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def nested(outer: str | None, inner: str | None) -> str | None:
    """A prompt version over another: its own template inside the parent's."""
    return inner if outer is None else outer if inner is None else outer.replace(SLOT, inner)


def joined(outer: str | None, inner: str | None) -> str | None:
    """A prompt version over another: the parent's system prompt first, then its own."""
    parts = [p for p in (outer, inner) if p]
    return "\n\n".join(parts) or None


def conversation(system_prompt: str | None, messages: list[dict], template: str | None = None) -> list[dict]:
    """The messages a policy answers: `messages` with `system_prompt` as the system turn
    (before a system turn the conversation brings itself, in the same message, since chat
    templates take one system message, first) and the last user message put into
    `template` at SLOT (a plain replacement: braces in either text are only text). Without
    either: `messages`."""
    messages = list(messages)
    if template:
        last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
        if last is not None:
            content = template.replace(SLOT, str(messages[last].get("content", "")))
            messages[last] = {**messages[last], "content": content}
    if not system_prompt:
        return messages
    if messages and messages[0].get("role") == "system":
        own = str(messages[0].get("content", ""))
        return [{"role": "system", "content": joined(system_prompt, own)}, *messages[1:]]
    return [{"role": "system", "content": system_prompt}, *messages]
