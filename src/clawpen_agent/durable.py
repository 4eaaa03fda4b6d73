"""Writing a file so that a crash at any moment leaves the old content or the new, never a mix.

The recipe: write a temporary file in the same directory, fsync it, rename it over the target
(atomic on POSIX), then fsync the directory so that the rename itself survives a power cut.
Standard library only: this runs inside the container.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: afterwards it holds the old bytes or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, ensure_ascii=False).encode())


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or unreadable (never half-written: see
    ``write_atomic``; unreadable means someone else wrote it)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
