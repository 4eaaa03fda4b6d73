"""JSON from hostile senders (an agent, an adapter, a webhook, a browser), refused past a depth.

Python's parser stops at its recursion limit (about 1,000 levels), but a value nested 900 deep
parses and then breaks whatever walks it next (a ``RecursionError`` from a handler: a 500 and a
huge traceback per request). Nothing we accept needs more than a few dozen levels, so every
hostile body is refused past ``MAX_DEPTH``, as a ``ValueError`` the caller already answers 400.

The check walks the parsed value with a stack of its own (no recursion), and only when the text
holds more opening brackets than the limit, which a small body never does. A pre-scan of the
text would have to skip string contents, and in pure Python that costs more than the parse.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

MAX_DEPTH = 100  # a Messages API request with nested tool schemas needs a few dozen


class TooDeep(ValueError):
    """A JSON value nested past the limit; the message is one line and echoes nothing."""


def _brackets(text: bytes | str) -> int:
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{")
    return text.count("[") + text.count("{")


def check_depth(value: Any, text: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` when ``value`` (parsed from ``text``) nests deeper than ``limit``
    arrays and objects: ``[[1]]`` is 2 deep."""
    if _brackets(text) <= limit:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    raise TooDeep(f"JSON nested deeper than {limit} levels; flatten it")
                stack.append((child, depth + 1))


def loads(text: bytes | str, limit: int = MAX_DEPTH) -> Any:
    """``json.loads``, refusing nesting past ``limit``. Raises ``ValueError`` (``TooDeep``,
    ``JSONDecodeError``, ``UnicodeDecodeError``) and never ``RecursionError``. Bytes must be
    UTF-8 (``json.loads`` alone would also guess UTF-16 and UTF-32)."""
    try:
        value = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {limit} levels; flatten it") from None
    if isinstance(value, dict | list):
        check_depth(value, text, limit)
    return value


async def read_object(request: web.Request) -> dict[str, Any]:
    """An HTTP request's body as a JSON object; anything else is the sender's mistake: a 400
    saying so, never a 500 (nor a traceback in the log)."""
    from aiohttp import web

    try:
        body = await request.json(loads=loads)
    except TooDeep as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON object is expected\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object is expected\n")
    return body
