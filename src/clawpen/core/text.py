"""Text from outside (a platform, an agent) made safe to store and to send on.

A lone surrogate (``"\\ud800"``, legal in JSON, illegal in UTF-8) makes SQLite's binding fail
and a NUL cuts C strings short; neither means anything to a reader. Both are replaced here, at
the edge, so the store never sees them::

    >>> clean_text("a\\ud800b\\x00c")
    'a\\ufffdbc'
"""

from __future__ import annotations

import re

from ..obs.redact import SECRETS

MAX_REPLY = 64_000  # characters: a runaway agent must not flood a chat with thousands of messages
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Replace lone surrogates with U+FFFD and drop NULs."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return _SURROGATE.sub("\ufffd", text)


def clip(text: str, limit: int, marker: str = "") -> str:
    """At most ``limit`` characters; ``marker`` (formatted with ``limit``) says it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + marker.format(limit=limit)


def reply_text(text: str, error: str | None = None, job: str | None = None) -> str:
    """What the user reads: the answer, or why there is none; clean, not endless, and without
    any secret value this process knows (an agent that echoes a key must not post it)."""
    if error is not None and job is not None:
        text = f"The scheduled job {job} failed: {error}"
    elif error is not None:
        text = f"Sorry, I could not answer that: {error}"
    return clip(SECRETS(clean_text(text)), MAX_REPLY, "\n[reply cut at {limit} characters]")
