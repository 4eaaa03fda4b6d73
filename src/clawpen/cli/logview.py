"""`clawpen logs`: the orchestrator's JSON log lines, read back, filtered and made readable.

``human`` turns one JSON line into ``2026-11-26 09:14:02 warning reply_retry  agent=assistant
chat=42 ...``; every value passes through ``chatui.inert``, since a log line can carry what an
agent or a platform wrote. ``tail`` reads the rotated files too; ``follow`` keeps reading across
a rotation.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .chatui import inert

FIRST_KEYS = ("agentId", "channel", "chat", "taskId")
SHORT = {"agentId": "agent", "taskId": "task"}
LAYOUT_KEYS = {"timestamp", "level", "event", "exception", "logger"}


def parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def matches(line: str, agent: str | None) -> bool:
    if agent is None:
        return True
    event = parse(line)
    return event is not None and event.get("agentId") == agent


def human(line: str) -> str:
    """One log line for a person: time (UTC), level, event, then the context keys (agent,
    channel, chat, task first), then a traceback if there is one, indented."""
    event = parse(line)
    if event is None:
        return inert(line.rstrip("\n"))
    stamp = str(event.get("timestamp", ""))[:19].replace("T", " ")
    level = str(event.get("level", "info"))
    head = f"{stamp} {level:<7} {event.get('event', '?')}"
    keys = [k for k in FIRST_KEYS if k in event]
    keys += [k for k in event if k not in LAYOUT_KEYS and k not in FIRST_KEYS]
    fields = " ".join(f"{SHORT.get(k, k)}={_value(event[k])}" for k in keys)
    text = f"{head}  {fields}" if fields else head
    if event.get("exception"):
        text += "\n" + "\n".join(f"    {row}" for row in str(event["exception"]).splitlines())
    return inert_lines(text)


def inert_lines(text: str) -> str:
    return "\n".join(inert(row) for row in text.split("\n"))


def _value(value: Any) -> str:
    """A bare word as it is; a string with spaces, quotes or newlines in double quotes (its
    control characters are made inert after); anything else as JSON."""
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def log_files(path: Path) -> list[Path]:
    """The rotated files, oldest first, then the current one."""
    older = sorted(
        (p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    return [*older, path] if path.exists() else older


def tail(path: Path, count: int, agent: str | None = None, until: int | None = None) -> list[str]:
    """The last ``count`` lines (of ``agent`` only, if given) across the rotated files; of the
    live file, only its first ``until`` bytes (where ``follow`` then takes over)."""
    kept: deque[str] = deque(maxlen=count)
    for file in log_files(path):
        with file.open("rb") as handle:
            data = handle.read(until if until is not None and file == path else -1)
        for line in data.decode("utf-8", errors="replace").splitlines():
            if matches(line, agent):
                kept.append(line)
    return list(kept)


def size(path: Path) -> int:
    """Where the live file ends now (0 when there is none yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def follow(
    path: Path,
    agent: str | None = None,
    interval: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    start: int | None = None,
) -> Iterator[str]:
    """Lines written to ``path`` from ``start`` (a byte offset; default its end now) on,
    forever; when the file is rotated (another inode at the path, or a shorter file) the rest
    of the old one is read, then the new one from its beginning."""
    handle = None
    at_end = True  # the first file is followed from ``start``; later ones from their start
    pending = ""
    while True:
        if handle is None:
            try:
                handle = path.open(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                at_end = False
                sleep(interval)
                continue
            if at_end:
                if start is None or start > os.fstat(handle.fileno()).st_size:
                    handle.seek(0, os.SEEK_END)
                else:
                    handle.seek(start)  # a byte offset at a line end: a valid text cookie
                at_end = False
        chunk = handle.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from (line for line in complete if matches(line, agent))
            continue
        if _rotated(path, os.fstat(handle.fileno()).st_ino, handle.tell()):
            pending += handle.read()
            handle.close()
            handle = None
            *complete, pending = pending.split("\n")
            yield from (line for line in complete if matches(line, agent))
            continue
        sleep(interval)


def _rotated(path: Path, inode: int, position: int) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return True
    return current.st_ino != inode or current.st_size < position
