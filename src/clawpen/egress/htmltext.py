"""Pure: an HTML page -> the text a reader sees, for a model to read (web_fetch).

Scripts, styles and other invisible parts go; blocks become lines, list items ``- ``,
headings ``# ``, links keep their target; ``<pre>`` keeps its spacing. Standard library only.

    >>> html_to_text("<h1>Hi</h1><p>Read <a href='/doc'>the doc</a>.<script>x()</script>")
    '# Hi\\n\\nRead the doc (/doc).'
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
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


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0  # depth inside invisible elements
        self.pre = 0
        self.href: list[str | None] = []
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
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

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
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
        if self.hidden:
            return
        self.parts.append(data if self.pre else _SPACES.sub(" ", data.replace("\n", " ")))


def html_to_text(html: str) -> str:
    """The visible text of ``html``; the page's title first when the body does not start with
    it. Never raises: a broken page gives what could be read."""
    parser = _Text()
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
