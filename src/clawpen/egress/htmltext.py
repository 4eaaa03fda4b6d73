"""Pure: an HTML page -> the text a reader sees, for a model to read (web_fetch).

Scripts, styles and other invisible parts go; blocks become lines, list items ``- ``,
headings ``# ``, links keep their target; ``<pre>`` keeps its spacing. Standard library only.

    >>> html_to_text("<h1>Hi</h1><p>Read <a href='/doc'>the doc</a>.<script>x()</script>")
    '# Hi\\n\\nRead the doc (/doc).'

Text a reader would not see does not reach the model either: a page can hide instructions for
it there (issue 23). Hidden are elements with the ``hidden`` attribute, ``aria-hidden="true"``,
an inline ``display: none`` or ``visibility: hidden``, and those a ``<style>`` block hides by
a simple selector (``.class``, ``#id``, ``tag``, ``tag.class``; rules inside ``@media`` too,
as some screen hides them). Not followed: selectors with combinators or pseudo-classes,
external stylesheets, scripts, and other tricks (tiny fonts, off-screen positions, colours).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
     "wbr"}
)  # fmt: skip
BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "ul", "ol",
        "table", "tr", "blockquote", "form", "figure", "dl", "dt", "dd", "br", "hr", "li",
        "h1", "h2", "h3", "h4", "h5", "h6", "pre", "title", "body",
    }
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LEAD = re.compile(r"^ (?=\S)|^ +$")  # the space left where a tag met a newline
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")
_HIDING = re.compile(
    r"(?:^|[;\s])(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse))(?![\w-])", re.I
)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.I | re.S)
_CSS_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_SIMPLE_SELECTOR = re.compile(r"([a-z][a-z0-9-]*|\*)?((?:[.#][\w-]+)*)", re.I)
_SELECTOR_PART = re.compile(r"([.#])([\w-]+)")
# A page that hides its whole body until a script shows it (against clickjacking) is common;
# taking that rule would leave the model an empty page, and hides nothing from it on purpose.
_WHOLE_PAGE = frozenset({"html", "body", "*"})


@dataclass(frozen=True)
class Selector:
    """A simple CSS selector: ``div.note#x`` is ``Selector("div", {"note"}, "x")``."""

    tag: str | None
    classes: frozenset[str]
    id: str | None

    def matches(self, tag: str, classes: set[str], id_: str | None) -> bool:
        return (
            (self.tag is None or self.tag == tag)
            and self.classes <= classes
            and (self.id is None or self.id == id_)
        )


def hiding_selectors(css: str) -> list[Selector]:
    """Pure: the simple selectors of ``css`` whose rules hide what they select.

    >>> [(s.tag, s.id) for s in hiding_selectors("p#b, .a { display: none } .c:hover {}")]
    [('p', 'b'), (None, None)]
    """
    found = []
    for selectors, declarations in _CSS_RULE.findall(_CSS_COMMENT.sub("", css)):
        if not _HIDING.search(declarations):
            continue
        for text in selectors.split(","):
            match = _SIMPLE_SELECTOR.fullmatch(text.strip())
            if match is None or not text.strip():
                continue  # a combinator, a pseudo-class or an attribute: not followed
            tag = match.group(1).lower() if match.group(1) else None
            if tag in _WHOLE_PAGE and not match.group(2):
                continue
            parts = _SELECTOR_PART.findall(match.group(2))
            ids = [name for kind, name in parts if kind == "#"]
            classes = frozenset(name for kind, name in parts if kind == ".")
            found.append(Selector(tag, classes, ids[0] if ids else None))
    return found


def hides(tag: str, attrs: list[tuple[str, str | None]], rules: list[Selector]) -> bool:
    """Pure: whether an element with these attributes is hidden from a reader."""
    values = dict(attrs)
    if "hidden" in values or (values.get("aria-hidden") or "").strip().lower() == "true":
        return True
    if _HIDING.search(_CSS_COMMENT.sub("", values.get("style") or "")):
        return True
    if not rules:
        return False
    classes = set((values.get("class") or "").split())
    return any(rule.matches(tag, classes, values.get("id")) for rule in rules)


class _Text(HTMLParser):
    def __init__(self, rules: list[Selector]) -> None:
        super().__init__(convert_charrefs=True)
        self.rules = rules
        self.parts: list[str] = []
        self.hidden = 0  # depth inside invisible elements
        self.hiding: str | None = None  # the tag of the outermost element hidden by markup
        self.hiding_depth = 0  # elements of that tag open inside it, itself included
        self.pre = 0
        self.href: list[str | None] = []
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if self.hiding is None and not self.hidden and hides(tag, attrs, self.rules):
            if tag in VOID:
                return  # a hidden image: not even its alt text
            self.hiding = tag
        if self.hiding is not None:
            if tag == self.hiding:
                self.hiding_depth += 1
            return
        if tag in HIDDEN:
            self.hidden += 1
            return
        if tag in BLOCKS:
            self.parts.append("\n\n" if tag in ("p", "h1", "h2", "h3", "pre") else "\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("- ")
        elif tag == "pre":
            self.pre += 1
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self.hidden:
                self.parts.append(f"[image: {alt}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """``<div hidden/>`` opens a div, as a browser reads it: ``/>`` closes only void
        elements (and those in SVG, which is all hidden)."""
        self.handle_starttag(tag, attrs)
        if tag in VOID or self.hidden:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if self.hiding is not None:
            if tag == self.hiding:
                self.hiding_depth -= 1
                if self.hiding_depth == 0:
                    self.hiding = None
            return
        if tag in HIDDEN:
            self.hidden = max(0, self.hidden - 1)
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag == "a" and self.href:
            href = self.href.pop()
            if href and not href.startswith(("#", "javascript:")) and not self.hidden:
                self.parts.append(f" ({href})")
        if tag in BLOCKS and tag not in ("li", "dt", "dd", "tr"):  # the next one starts a line
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        if self.hidden or self.hiding is not None:
            return
        self.parts.append(data if self.pre else _SPACES.sub(" ", data.replace("\n", " ")))


def html_to_text(html: str) -> str:
    """The visible text of ``html``; the page's title first when the body does not start with
    it. Never raises: a broken page gives what could be read."""
    parser = _Text(hiding_selectors("\n".join(_STYLE_BLOCK.findall(html))))
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # HTMLParser's way of giving up on garbage
        pass
    lines = [_LEAD.sub("", line.rstrip()) for line in "".join(parser.parts).split("\n")]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    title = " ".join(parser.title.split())
    if title and not text.startswith(title) and not text.startswith("# " + title):
        text = f"{title}\n\n{text}"
    return text
