"""The orchestrator's log on disk: ``data_dir/logs/clawpen.log``, owner-only, rotated by size.

A log line can hold a chat id, an agent's error or a path, so the directory is 0700 and every
file 0600 from the moment it exists. When the file passes ``max_bytes`` it becomes
``clawpen.log.1`` (the older ones move up, the oldest past ``backups`` is deleted) and a new one
starts: the disk holds at most ``(backups + 1) * max_bytes`` of log.

Written only from the ``LineWriter``'s thread (``logging.py``), never from the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

LOG_DIR = "logs"
LOG_NAME = "clawpen.log"


def log_path(data_dir: Path) -> Path:
    return data_dir / LOG_DIR / LOG_NAME


class RotatingFile:
    """A text sink (``write``, ``flush``) that appends to ``path`` and rotates it by size."""

    def __init__(self, path: Path, max_bytes: int = 10 * 2**20, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # an older file, created under a looser umask
        return fd

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        if self._size and self._size + len(data) > self.max_bytes:
            self.rotate()
        os.write(self._fd, data)
        self._size += len(data)
        return len(text)

    def flush(self) -> None:
        """Each ``write`` is one system call straight to the file: nothing is buffered."""

    def rotate(self) -> None:
        os.close(self._fd)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        os.close(self._fd)


class Sink(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Tee:
    """Writes each text to every sink (stdout and the file); one that fails does not stop the
    others."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def write(self, text: str) -> int:
        for sink in self.sinks:
            try:
                sink.write(text)
                sink.flush()
            except (OSError, ValueError):
                pass  # stdout closed, a disk full: the other sink still gets it
        return len(text)

    def flush(self) -> None:
        """Every ``write`` flushes each sink."""
