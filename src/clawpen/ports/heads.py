"""Is this the head of an HTTP/1.1 request a listener should hand on? Pure: bytes in, a verdict
out, so that a listener can answer a bad head in its own words (the door: one line of JSON)
before aiohttp's parser, whose own refusals are plain text, ever sees it.

>>> limits = HeadLimits(max_line_size=100, max_field_size=100, max_headers=8)
>>> check_head(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n", limits)
Head(size=30, body=0)
>>> check_head(b"GET / HTTP/1.1\\r\\nHo", limits) is None  # not all there yet
True
>>> check_head(b"\\x16\\x03\\x01 hello\\r\\n\\r\\n", limits).reason
'malformed_request'

Deliberately stricter than aiohttp (CRLF line ends, no folded headers, an ASCII target): what
passes here, aiohttp parses; aiohttp keeps the same size limits behind it for a head that
arrives pipelined behind another request, which a listener passes on unread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
REQUEST_LINE = re.compile(TCHAR + rb"+ [\x21-\x7e]+ HTTP/1\.[01]")
# a request line not yet ended: method, target, version, each maybe cut short
PARTIAL_REQUEST_LINE = re.compile(TCHAR + rb"*(?: [\x21-\x7e]*(?: [\x21-\x7e]*)?)?\r?")
HEADER_LINE = re.compile(TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*")
CONTENT_LENGTH = re.compile(rb"[ \t]*[0-9]{1,18}[ \t]*")


@dataclass(frozen=True)
class HeadLimits:
    max_line_size: int  # the request line
    max_field_size: int  # one header line
    max_headers: int


@dataclass(frozen=True)
class Head:
    """A whole, good head: its ``size`` through the blank line, and the ``body`` after it
    (its Content-Length; 0 without one; ``None`` when chunked: where it ends is aiohttp's to
    find, so what follows it is not checked here)."""

    size: int
    body: int | None


@dataclass(frozen=True)
class BadHead:
    """A head refused: a snake_case reason (``request_head_too_large``, ``malformed_request``)
    and a one-line message that echoes none of the sender's bytes."""

    reason: str
    message: str


def too_large(message: str) -> BadHead:
    return BadHead("request_head_too_large", message)


def malformed(message: str) -> BadHead:
    return BadHead("malformed_request", message)


def check_head(data: bytes, limits: HeadLimits) -> Head | BadHead | None:
    """The head that ``data`` begins with when it is whole and good, ``None`` while what came
    so far may still become one, or why not."""
    start = len(data) - len(data.lstrip(b"\r\n"))  # empty lines before a request are ignored
    end = data.find(b"\r\n\r\n", start)
    lines = data[start : len(data) if end < 0 else end].split(b"\r\n")
    whole = end >= 0
    request_line, fields = lines[0], lines[1:]
    if len(request_line) > limits.max_line_size:
        return too_large(f"request line over {limits.max_line_size} bytes")
    if len(fields) > limits.max_headers + (0 if whole else 1):
        return too_large(f"more than {limits.max_headers} headers")
    if any(len(field) > limits.max_field_size for field in fields):
        return too_large(f"a header line over {limits.max_field_size} bytes")
    if (whole or fields) and not REQUEST_LINE.fullmatch(request_line):
        return malformed("not an HTTP/1.1 request line")
    if not (whole or fields) and not PARTIAL_REQUEST_LINE.fullmatch(request_line):
        return malformed("not an HTTP/1.1 request line")
    ended = fields if whole else fields[:-1]
    if any(not HEADER_LINE.fullmatch(field) for field in ended):
        return malformed("a header line is not NAME: value")
    if not whole:
        return None
    body = _body_length(ended)
    return body if isinstance(body, BadHead) else Head(end + 4, body)


def _body_length(fields: list[bytes]) -> int | BadHead | None:
    """Where the body ends must be beyond doubt: a request smuggled behind another is the
    classic way past a proxy."""
    named = [field.split(b":", 1) for field in fields]
    lengths = [value for name, value in named if name.lower() == b"content-length"]
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in named)
    if any(not CONTENT_LENGTH.fullmatch(value) for value in lengths):
        return malformed("Content-Length is not a number")
    if len(lengths) > 1 or (lengths and chunked):
        return malformed("the body's length is given twice")
    if chunked:
        return None
    return int(lengths[0]) if lengths else 0
