"""Model output as Markdown that can never become live HTML.

Completions are untrusted text: a model can write `<script>` or `<img onerror=...>`.
Outside code, every `<`, `>` and `&` is escaped, so HTML shows as the characters typed;
inside code fences and inline code Markdown already shows text literally, and escaping
there would print the entities themselves.
"""

from __future__ import annotations

import html
import re

_CODE = re.compile(r"(^```.*?(?:^```[^\n]*$|\Z)|`[^`\n]+`)", re.DOTALL | re.MULTILINE)


def safe_markdown(text: str) -> str:
    parts = _CODE.split(text)
    # re.split with one group alternates: text outside code, code, text outside code...
    return "".join(part if i % 2 else html.escape(part, quote=False) for i, part in enumerate(parts))
