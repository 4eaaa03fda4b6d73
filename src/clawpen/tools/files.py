"""Files an agent sends back (the ``send_file`` tool), through its socket.

The agent's runtime reads the file inside its container and posts the bytes; the host never
opens a path the agent named (peers' hosts followed a container's symlink to read host files).
Here the bytes are checked like everything from the socket: within the platform's limit (a
larger file is refused, naming the limit), a name cleaned to a plain one, a media type sniffed
from the bytes or read from the name's extension, never taken from the agent. The file goes to
the chat the agent is answering, committed as a reply, so the outbox delivers it in order with
the chat's other replies, with retries, once across a restart. An agent sends at most
``PER_MINUTE`` files a minute.
"""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..channels.base import MAX_FILE_BYTES
from ..door.server import ToolRefused
from ..errors import StoreError
from ..models import Address, OutboundFile
from ..obs.logging import get_logger
from ..ratelimit import KeyedBuckets
from .api import Chats
from .send import send_target

PER_MINUTE = 10
BURST = 5
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")
_TYPES = mimetypes.MimeTypes()  # the standard library's own table, not the host's files
# what a file's first bytes say it is, whatever its name says
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"%PDF-", 0, "application/pdf"),
    (b"OggS", 0, "audio/ogg"),
)
# media types a platform shows inline: only ever given when the bytes say so
_SNIFFED_ONLY = frozenset(media for _, _, media in _MAGIC) | {"image/svg+xml", "text/html"}


def clean_name(name: str) -> str:
    """A plain file name that still reads like the agent's.

    >>> clean_name("../../etc/passwd")
    'passwd'
    >>> clean_name("chart (final)\\u202e.png")
    'chart _final_.png'
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = _UNSAFE.sub("_", base).strip(" ._-") or "file"
    if len(safe) > MAX_NAME:
        stem, dot, extension = safe.rpartition(".")
        keep = extension[:16] if dot and stem else ""
        safe = safe[: MAX_NAME - len(keep) - 1] + "." + keep if keep else safe[:MAX_NAME]
    return safe


def media_type(name: str, data: bytes) -> str:
    """What the bytes are: their signature first; else the name's extension, except for the
    types only a signature may claim (a name ending in .png on bytes that are not a PNG is
    just bytes); else ``application/octet-stream``.

    >>> media_type("x.png", b"\\x89PNG\\r\\n\\x1a\\n...")
    'image/png'
    >>> media_type("x.png", b"<script>")
    'application/octet-stream'
    >>> media_type("data.csv", b"a,b")
    'text/csv'
    """
    for signature, offset, found in _MAGIC:
        if data[offset : offset + len(signature)] == signature:
            if found == "image/webp" and not data.startswith(b"RIFF"):
                continue
            return found
    guessed, _ = _TYPES.guess_type(name, strict=False)
    if guessed is None or guessed in _SNIFFED_ONLY or guessed.startswith("image/"):
        return "application/octet-stream"
    return guessed


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size} bytes"


class AgentFiles:
    """What the door asks about a file before reading it (``target``), and the commit."""

    def __init__(
        self,
        chats: Chats,
        limits: Mapping[str, int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chats = chats
        self.limits = limits  # each platform's max_file_bytes
        self.clock = clock
        self.rate: KeyedBuckets[str] = KeyedBuckets(PER_MINUTE / 60, BURST)
        self.log = get_logger()

    def target(self, agent_id: str, size: int, task_id: int | None = None) -> Address:
        """Where the file goes (the chat being answered), if it may go there at ``size`` bytes;
        ``ToolRefused`` naming why not (no chat, over the platform's limit) before a byte of
        the body is read."""
        answering = self.chats.answering(agent_id, task_id)
        target = send_target(agent_id, None, answering, self.chats.pairings)
        if isinstance(target, str):
            raise ToolRefused(403, target)
        limit = min(self.limits.get(target.channel, 0), MAX_FILE_BYTES)
        if limit <= 0:
            raise ToolRefused(403, f"files cannot be sent on {target.channel}")
        if size > limit:
            self.log.warning("agent_file_refused", agentId=agent_id, size=size, limit=limit)
            raise ToolRefused(
                413,
                f"the file is {megabytes(size)}, over {target.channel}'s limit of"
                f" {megabytes(limit)} per file; send a smaller one (compress or split it)",
            )
        if size == 0:
            raise ToolRefused(400, "the file is empty")
        return target

    async def send(
        self,
        agent_id: str,
        target: Address,
        name: str,
        caption: str,
        data: bytes,
        task_id: int | None = None,
    ) -> dict[str, Any]:
        if not self.rate.allow(agent_id, self.clock()):
            raise ToolRefused(429, f"at most {PER_MINUTE} files a minute; wait a little")
        clean = clean_name(name)
        file = OutboundFile(target, clean, media_type(clean, data), data, caption)
        try:
            reply = await self.chats.send_file(agent_id, file, task_id)
        except StoreError as exc:
            self.log.error("store_unwritable", what="agent_file", error=str(exc))
            raise ToolRefused(503, "the file could not be stored; try again shortly") from None
        if reply is None:
            reason = f"{target.chat_address} is no longer a chat paired with you"
            raise ToolRefused(403, reason)
        self.log.info(
            "agent_file_sent",
            agentId=agent_id,
            chat=target.chat_address,
            mediaType=file.media_type,
            size=len(data),
        )
        return {
            "sent": True,
            "to": target.chat_address,
            "name": clean,
            "media_type": file.media_type,
            "size": len(data),
        }
