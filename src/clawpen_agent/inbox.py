"""Files users send: saved in /workspace/inbox/, and shown to the model when it can see them.

Images (and PDFs) go to the model as content blocks with the user's turn; every file, shown or
not, stays in the inbox for the agent's tools. Only the turn that brought them carries the
blocks: the saved history keeps the text, which names the files, so later turns do not pay for
an image again.

Standard library only: this module runs inside the container.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import InboxFile

INBOX = "inbox"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # the Messages API's limit for one image
MAX_SHOWN_BYTES = 12 * 1024 * 1024  # of files shown in one request (the door takes 20 MiB)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class Saved:
    path: Path
    media_type: str
    data: bytes


def save_files(files: list[InboxFile], root: str) -> list[Saved]:
    """Write each file into the inbox (temp file, fsync, rename: whole or not at all)."""
    inbox = Path(root) / INBOX
    saved: list[Saved] = []
    for file in files:
        if not _PLAIN_NAME.fullmatch(file.name):
            continue  # the orchestrator names files; anything else is not written anywhere
        try:
            data = base64.b64decode(file.data, validate=True)
        except (binascii.Error, ValueError):
            continue
        inbox.mkdir(parents=True, exist_ok=True)
        path = inbox / file.name
        temp = path.with_name(f".{file.name}.part")
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(path)
        saved.append(Saved(path, file.media_type, data))
    return saved


def user_content(text: str, saved: list[Saved]) -> str | list[dict[str, Any]]:
    """The user's turn: plain text, or text followed by the images and documents it brought."""
    blocks: list[dict[str, Any]] = []
    budget = MAX_SHOWN_BYTES
    for file in saved:
        kind = _block_kind(file)
        if kind is None or len(file.data) > budget:
            continue
        budget -= len(file.data)
        source = {
            "type": "base64",
            "media_type": file.media_type,
            "data": base64.b64encode(file.data).decode(),
        }
        blocks.append({"type": kind, "source": source})
    if not blocks:
        return text
    return [{"type": "text", "text": text}, *blocks]


def _block_kind(file: Saved) -> str | None:
    if file.media_type in IMAGE_TYPES and len(file.data) <= MAX_IMAGE_BYTES:
        return "image"
    if file.media_type in DOCUMENT_TYPES:
        return "document"
    return None
