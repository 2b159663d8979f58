"""Annotation guidelines: Markdown text, versioned. Every save makes a new version, and a
ranking records the version its annotator worked under, so a change of instructions
can be seen in the data."""

from __future__ import annotations

from storage.db import first_row

DEFAULT_GUIDELINES = """\
# How to rank

You see one prompt and several answers, lettered A, B, C, ... Put them in order, best first.

- **Helpful first**: does the answer do what was asked, completely and clearly?
  A short answer that solves the problem beats a long one that wanders.
- **Honest**: prefer answers that are correct and say so when they are unsure.
  A confident wrong fact is worse than an honest "I don't know".
- **Harmless**: an answer that helps someone hurt people, or is hateful, ranks last
  whatever its other qualities. Mark it with the *unsafe* flag as well.
- **Ties** (`=`) are for answers that are genuinely equally good (or equally bad),
  not for when you are in a hurry: `C > B = D > A`.
- **Flags**: *unsafe*, *factually wrong* or *nonsense* describe one answer; use them
  whenever they apply, independently of the order.
- **None is acceptable**: tick it when even the best answer should not be shown to a
  user. Still rank them (the least bad first), and if you can, write a better answer.
- **Skip** only when you cannot judge (a language or topic you do not know), and say why.

## Keyboard shortcuts

Listed next to the ranking box in the annotation page.
"""


def current(cur) -> tuple[int, str]:
    """(version, text) of the newest guidelines, or (0, the built-in default) before any
    have been saved."""
    row = first_row(cur.execute("SELECT version, text FROM guidelines ORDER BY version DESC LIMIT 1"))
    return (row[0], row[1]) if row else (0, DEFAULT_GUIDELINES)


def save(cur, text: str, author: str | None) -> int:
    """Store `text` as the next version; returns its number. Old versions are kept,
    since rankings refer to them."""
    version = cur.execute("SELECT coalesce(max(version), 0) + 1 FROM guidelines").fetchall()[0][0]
    cur.execute("INSERT INTO guidelines (version, text, author) VALUES (?, ?, ?)", [version, text, author])
    return version
