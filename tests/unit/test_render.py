"""The renderer of untrusted text (app/render.py), as a pure function: every hostile text of
tests/data/hostile_texts.json becomes formatting only, code keeps its characters, links
live only to http(s) with their target shown, images are never loaded."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from app.render import ALLOWED_TAGS, IMAGE_CLASS, LINK_TARGET_CLASS, Blocks, RenderedText, render
from helpers import DATA

CORPUS = json.loads((DATA / "hostile_texts.json").read_text())["texts"]
ALLOWED_ATTRIBUTES = {"a": {"href", "target", "rel"}, "span": {"class"}, "ol": {"start"}}


class Parsed(HTMLParser):
    """The elements, attributes and text the browser would make of some HTML."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.code: list[str] = []
        self._in_code = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_code += tag == "code"

    def handle_endtag(self, tag):
        self._in_code -= tag == "code"

    def handle_data(self, data):
        self.texts.append(data)
        if self._in_code:
            self.code.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.texts).split())

    def tags(self, name: str) -> list[dict]:
        return [attrs for tag, attrs in self.elements if tag == name]


def test_the_corpus_is_big_enough_and_covers_the_issue():
    texts = [item["text"] for item in CORPUS]
    assert len(CORPUS) >= 25
    for needle in ("position:fixed", "\\`<img", "javascript:", "data:text", "vbscript:", "<svg", "<math", "<iframe",
                   "<style>", "onmouseover", "&lt;", "![t](https://example.org/beacon.png)", "```"):
        assert any(needle in text for text in texts), needle


@pytest.mark.parametrize("item", CORPUS, ids=[item["name"] for item in CORPUS])
def test_hostile_text_renders_as_formatting_only(item):
    shown = Parsed(render(item["text"]))
    for tag, attrs in shown.elements:
        assert tag in ALLOWED_TAGS, f"{tag} made from {item['text']!r}"
        assert set(attrs) <= ALLOWED_ATTRIBUTES.get(tag, set()), f"{tag} {attrs} made from {item['text']!r}"
    for link in shown.tags("a"):
        assert link["href"].startswith(("http://", "https://")) and link["rel"] == "noopener noreferrer nofollow"
    for span in shown.tags("span"):
        assert span["class"] in (LINK_TARGET_CLASS, IMAGE_CLASS)
    for visible in item["visible"]:
        assert visible in shown.text


def test_the_reported_attacks_stay_text():
    """The issue's three findings against the old regex renderer."""
    form = render(CORPUS[0]["text"])
    assert "<form" not in form and "<input" not in form and "<button" not in form and "<div" not in form
    assert "&lt;form action=" in form
    escaped = render('\\`<img src=x onerror="alert(1)">`')
    assert "<img" not in escaped and "&lt;img src=x" in escaped
    beacon = Parsed(render("![t](https://example.org/beacon.png)"))
    assert not beacon.tags("img") and "[image: t] (https://example.org/beacon.png)" in beacon.text


def test_code_keeps_every_character():
    source = '<b>&amp;</b> **not bold** [x](javascript:y) ![i](https://example.org/i.png)\n  indented <i> `tick`\n'
    for text in (f"```python\n{source}```", f"~~~\n{source}~~~", f"````\n{source}", "\n".join(
            "    " + line for line in source.splitlines()) + "\n"):
        shown = Parsed(render(text))
        assert not shown.tags("b") and not shown.tags("strong") and not shown.tags("a") and not shown.tags("img")
        assert "".join(shown.code) == source, text
    inline = Parsed(render("use `<script>&lt;` here"))
    assert inline.code == ["<script>&lt;"] and not inline.tags("script")


def test_only_web_links_are_live_and_each_shows_where_it_goes():
    web = Parsed(render('[the docs](https://example.org/docs "title") and <http://example.org/a>'))
    assert [link["href"] for link in web.tags("a")] == ["https://example.org/docs", "http://example.org/a"]
    assert all(link["target"] == "_blank" for link in web.tags("a"))
    assert "the docs (https://example.org/docs)" in web.text
    assert "http://example.org/a (http" not in web.text  # an address as its own words is not repeated
    for target in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,hi", "vbscript:x", "mailto:a@b.c",
                   "/logout", "ftp://example.org/f"):
        shown = Parsed(render(f"[go]({target})"))
        assert not shown.tags("a"), target
        assert "go" in shown.text and target.split(":")[-1].split("/")[-1] in shown.text, target


def test_images_are_text_and_never_load():
    for source in ("https://example.org/beacon.png", "/file=secret.png", "data:image/png;base64,AAAA",
                   "//example.org/x.gif"):
        shown = Parsed(render(f'![a cat]({source} "t") and ![]({source})'))
        assert not shown.tags("img"), source
        assert f"[image: a cat] ({source})" in shown.text and f"[image: ] ({source})" in shown.text


def test_markdown_formatting_still_works():
    shown = render("# Title\n\n**bold** _it_ ~~gone~~\n\n- one\n- two\n\n> quoted\n\n| a |\n|---|\n| 1 |")
    for fragment in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<s>gone</s>", "<li>one</li>",
                     "<blockquote>", "<td>1</td>"):
        assert fragment in shown
    assert render(None) == "" and render("") == ""


def test_blocks_render_apart():
    """A prompt's unclosed fence cannot swallow the completions shown after it."""
    joined = Parsed(render("```\nopen fence\n\n### A\n\n**after**"))
    assert not joined.tags("h3")  # one text: the fence runs to its end
    apart = Parsed(RenderedText().postprocess(Blocks(["```\nopen fence", "### A", "**after**"])))
    assert apart.tags("h3") and apart.tags("strong") and apart.code == ["open fence"]


def test_the_component_renders_what_a_handler_returns():
    component = RenderedText("**hi** <img src=x onerror=alert(1)>", elem_id="x", elem_classes="mine")
    assert component.value == "<p><strong>hi</strong> &lt;img src=x onerror=alert(1)&gt;</p>\n"
    assert component.elem_classes == ["mine", "rendered-text"]
    assert component.postprocess("<iframe src=https://example.org>") == \
        "<p>&lt;iframe src=https://example.org&gt;</p>\n"
    assert component.postprocess(None) == ""


def test_refusals_reach_gradios_html_toasts_as_text():
    """Gradio renders a gr.Error's message as HTML: a refusal quoting untrusted text must
    open no tag, and a ranking's '>' still reads as typed."""
    from app.session import refusal, user_error
    from rlhf.errors import UserError

    payload = '<form action="https://example.org/x"><input name=p><button>Sign in</button></form> & C > B'
    assert refusal(payload).message == ('&lt;form action="https://example.org/x"&gt;'.replace("&gt;", ">")
                                        + "&lt;input name=p>&lt;button>Sign in&lt;/button>&lt;/form> &amp; C > B")
    with pytest.raises(Exception) as raised, user_error():
        raise UserError(f"There is no prompt set '{payload}'.")
    assert "<" not in raised.value.message and "C > B" in raised.value.message
