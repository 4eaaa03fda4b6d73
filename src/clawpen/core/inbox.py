"""Files users send, on their way into the agent's ``/workspace/inbox/``: their names there and
the note each message's text gains. Pure; the agent writes them (the only way into a container
is its socket), the store keeps them until it has.

    >>> inbox_name("1700000000.000100", 0, "../../etc/passwd")
    '1700000000.000100-0-etc_passwd'
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from clawpen_agent.protocol import ChatLine, InboxFile

from ..models import TaskFile
from .voice import VoiceNote, voice_line

INBOX_DIR = "/workspace/inbox"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def inbox_name(platform_id: str, index: int, name: str) -> str:
    """A plain file name, unique per message and file, that still reads like the original."""
    safe = _UNSAFE.sub("_", name).strip("._-")[:120] or "file"
    prefix = _UNSAFE.sub("_", platform_id).strip("._-")[:60] or "message"
    return f"{prefix}-{index}-{safe}"


def file_note(name: str, media_type: str, size: int) -> str:
    kilobytes = max(1, round(size / 1024))
    return f"[file: {INBOX_DIR}/{name} ({media_type}, {kilobytes} KB)]"


def with_files(
    lines: Sequence[ChatLine],
    platform_ids: Sequence[str],
    files: Sequence[TaskFile],
    voice: Sequence[VoiceNote | None] = (),
) -> tuple[list[ChatLine], list[InboxFile]]:
    """Each line with a note per file its message brought, and the files for the agent. A voice
    note (``voice``, one entry per file, ``None`` for any other file) joins as its transcript,
    ``[voice note, 12 s]: ...``, or says it arrived and where its audio is."""
    notes: dict[str, list[str]] = {}
    inbox: list[InboxFile] = []
    counts: dict[str, int] = {}
    for position, file in enumerate(files):
        index = counts.get(file.platform_id, 0)
        counts[file.platform_id] = index + 1
        name = inbox_name(file.platform_id, index, file.name)
        spoken = voice[position] if position < len(voice) else None
        notes.setdefault(file.platform_id, []).append(
            file_note(name, file.media_type, len(file.data))
            if spoken is None
            else voice_line(spoken, f"{INBOX_DIR}/{name}")
        )
        inbox.append(InboxFile(name, file.media_type, base64.b64encode(file.data).decode()))
    annotated = [
        ChatLine(line.sender, "\n".join([line.text, *notes.get(platform_id, [])]).strip())
        for line, platform_id in zip(lines, platform_ids, strict=True)
    ]
    return annotated, inbox
