"""Cutting a long reply into messages a platform accepts, the way a person would.

A cut goes at a paragraph break if one is in the second half of the allowance, else at a line
end, else between words, and only as a last resort in the middle of a word. A code block is
never left open: when the cut must fall inside one (the block is longer than the rest of the
allowance), the chunk closes the fence and the next one reopens it with the same language, so
every message renders as code on its own::

    >>> split_text("```py\\nline one\\nline two\\n```", 20)
    ['```py\\nline one\\n```', '```py\\nline two\\n```']

Pure: no I/O, so its rules are a table of tests.
"""

from __future__ import annotations

FENCE = "```"
CLOSE = "\n" + FENCE
MAX_OPENER = 24  # characters of a fence's opening line carried into the next chunk


def split_text(text: str, limit: int) -> list[str]:
    """Chunks of at most ``limit`` characters that together say what ``text`` says."""
    chunks: list[str] = []
    while len(text) > limit:
        head, text = _cut(text, limit)
        chunks.append(head)
    chunks.append(text)
    return chunks


def _cut(text: str, limit: int) -> tuple[str, str]:
    """The next chunk and what is left after it."""
    cut, skip = _cut_point(text, limit)
    opener = _open_fence(text[:cut])
    if opener is None:
        return text[:cut], text[cut + skip :]
    block_start = _block_start(text[:cut])
    if block_start > limit // 2:  # the block starts late in this chunk: move it to the next
        before, skip = _cut_point(text, block_start)
        if _open_fence(text[:before]) is None and before > 0:
            return text[:before], text[before + skip :]
    reopen = opener[:MAX_OPENER] + "\n"
    room = limit - len(CLOSE)
    opened = text.index("\n", block_start) if "\n" in text[block_start:cut] else cut
    if room <= max(len(reopen), opened):  # no room for fences: cut plainly
        return text[:cut], text[cut + skip :]
    cut, skip = _cut_point(text, room, floor=opened, within_code=True)
    return text[:cut] + CLOSE, reopen + text[cut + skip :]


def _cut_point(
    text: str, limit: int, floor: int | None = None, within_code: bool = False
) -> tuple[int, int]:
    """Where to cut ``text`` so the head has at most ``limit`` characters (and more than
    ``floor``, by default half of them), and how many separator characters to drop there. In
    code, only at line ends (indentation matters)."""
    floor = limit // 2 if floor is None else floor
    window = text[: limit + 1]
    separators = ("\n",) if within_code else ("\n\n", "\n", " ")
    for separator in separators:
        at = window.rfind(separator, 0, limit + 1)
        if at > floor and at + len(separator) <= len(text):
            if separator == "\n\n":  # a paragraph break: drop the blank lines after it too
                end = at
                while end < len(text) and text[end] == "\n":
                    end += 1
                return at, end - at
            return at, len(separator)
    return limit, 0


def _fences(text: str) -> list[tuple[int, str]]:
    """(offset, opening line) of every fence line in ``text``."""
    found: list[tuple[int, str]] = []
    offset = 0
    for line in text.split("\n"):
        if line.lstrip().startswith(FENCE):
            found.append((offset, line.strip()))
        offset += len(line) + 1
    return found


def _open_fence(text: str) -> str | None:
    """The opening line of a code block left open at the end of ``text``, if one is."""
    fences = _fences(text)
    if len(fences) % 2 == 0:
        return None
    return fences[-1][1]


def _block_start(text: str) -> int:
    """Where the code block left open at the end of ``text`` starts."""
    return _fences(text)[-1][0]
