"""Untrusted text as page formatting that can never become page structure.

Completions, prompts, guidelines, names, job logs and errors are written by models,
imports, researchers or annotators, so every one of them reaches the page through
`render`: a real Markdown parser with raw HTML off (`markdown-it-py`, `html=False`), then
the allow-list sanitiser `nh3` on its output. A regex over the text cannot be the defence:
it disagrees with the parser on fences and escapes, and the parser is what the page shows.

- Code (fenced, indented, inline) keeps its characters exactly.
- A link is live only to an absolute http(s) address, and shows that address as text
  beside its words; any other target stays as text.
- No image is loaded: an image becomes its alt text and its address, as text (the
  workbench runs on closed networks and must not tell an outside server who reads what).

`RenderedText` is the page component for such text: its handlers return Markdown and the
component renders it on the way out, so no handler can hand the page unrendered text, and
Gradio's own Markdown pipeline (which re-parses HTML and typesets `$$`) never sees it.
"""

from __future__ import annotations

from html import escape
from typing import Sequence
from urllib.parse import urlsplit

import gradio as gr
import nh3
from markdown_it import MarkdownIt

# What Markdown can make, and nothing else: no img, form, input, button, iframe, style,
# script, svg, math, no class or style but the two spans below
ALLOWED_TAGS = frozenset({"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
                          "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
                          "span"})
LINK_SCHEMES = frozenset({"http", "https"})
LINK_REL = "noopener noreferrer nofollow"
LINK_TARGET_CLASS = "link-target"
IMAGE_CLASS = "image-ref"

_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags={"script", "style"},
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    tag_attribute_values={"a": {"target": {"_blank"}}},
    allowed_classes={"span": {LINK_TARGET_CLASS, IMAGE_CLASS}},
    url_schemes=set(LINK_SCHEMES),
    link_rel=LINK_REL,
    strip_comments=True,
)


def _web_address(url: str) -> bool:
    """Whether `url` is an absolute http(s) address: relative ones (`/logout`) and every
    other scheme (`mailto:`, `javascript:`) do not become live links."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in LINK_SCHEMES and bool(parts.netloc)


def _link_open(self, tokens, idx, options, env) -> str:
    """An http(s) link opens in a new tab without a referrer; any other becomes its words."""
    href = tokens[idx].attrGet("href") or ""
    live = _web_address(href)
    env.setdefault("links", []).append((href, live, tokens[idx].info == "auto"))
    if not live:
        return ""
    return f'<a href="{escape(href)}" target="_blank">'


def _link_close(self, tokens, idx, options, env) -> str:
    """Close the link and show where it goes, unless its words are the address."""
    href, live, automatic = env["links"].pop()
    target = "" if automatic else f' <span class="{LINK_TARGET_CLASS}">({escape(href)})</span>'
    return ("</a>" if live else "") + target


def _image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    source = token.attrGet("src") or ""
    return f'<span class="{IMAGE_CLASS}">[image: {escape(alt)}] ({escape(source)})</span>'


def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    parser.enable(["table", "strikethrough"])
    parser.add_render_rule("link_open", _link_open)
    parser.add_render_rule("link_close", _link_close)
    parser.add_render_rule("image", _image)
    return parser


_PARSER = _parser()


def sanitize(html: str) -> str:
    """HTML through the allow-list: what the renderer makes passes unchanged."""
    return _CLEANER.clean(html)


def render(text: str | None) -> str:
    """Markdown written by anyone, as HTML safe to put in the page."""
    if not text:
        return ""
    return sanitize(_PARSER.render(str(text), {}))


def render_blocks(blocks: Sequence[str]) -> str:
    """Several texts rendered apart and joined, so one text's unclosed fence or open list
    cannot swallow the texts after it."""
    return "".join(render(block) for block in blocks)


class Blocks(tuple):
    """Markdown texts a handler hands `RenderedText` to render one by one (`render_blocks`)."""


class RenderedText(gr.HTML):
    """A page component for untrusted Markdown: whatever a handler returns (a string, or
    `Blocks`) is rendered by `render` before it leaves the server."""

    def __init__(self, value=None, **kwargs):
        classes = kwargs.pop("elem_classes", None) or []
        classes = [classes] if isinstance(classes, str) else list(classes)
        super().__init__(value, elem_classes=[*classes, "rendered-text"], **kwargs)

    def postprocess(self, value) -> str:
        if isinstance(value, Blocks):
            return render_blocks(value)
        return render(value)
