"""The agent's key-value memory: facts it keeps across conversations and restarts.

One JSON object in ``/workspace/.clawpen/memory.json``, rewritten whole and atomically on every
change (``durable.write_atomic``), so a crash mid-write leaves the old value or the new one.
It lives on the agent's own volume: no other agent can see it. Limits keep it a memory, not a
database: the model is told plainly when it hits one.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from .durable import read_json, write_json

MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 16_000
MAX_KEYS = 500
MAX_TOTAL_CHARS = 1_000_000
_CHANGING = threading.Lock()  # the agent's lanes read, change and rewrite the file one at a time
_KEY = re.compile(r"[^\x00-\x1f\x7f]+")  # printable: a key is shown in lists, one per line


class MemoryRefused(Exception):
    """A memory call the model got wrong; the text says how to fix it."""


class Memory:
    def __init__(self, root: str) -> None:
        self.path = Path(root) / ".clawpen" / "memory.json"

    def _load(self) -> dict[str, str]:
        data = read_json(self.path)
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def get(self, key: str) -> str | None:
        return self._load().get(check_key(key))

    def set(self, key: str, value: str) -> None:
        key = check_key(key)
        if not isinstance(value, str):
            raise MemoryRefused("'value' must be a string")
        if len(value) > MAX_VALUE_CHARS:
            raise MemoryRefused(
                f"the value is {len(value)} characters; at most {MAX_VALUE_CHARS} fit in one key"
                " (split it, or keep long text in a file with write_file)"
            )
        with _CHANGING:
            self._change(key, value)

    def _change(self, key: str, value: str) -> None:
        data = self._load()
        if key not in data and len(data) >= MAX_KEYS:
            raise MemoryRefused(f"memory holds {MAX_KEYS} keys already; delete some first")
        total = sum(len(k) + len(v) for k, v in data.items() if k != key) + len(key) + len(value)
        if total > MAX_TOTAL_CHARS:
            raise MemoryRefused(f"memory would exceed {MAX_TOTAL_CHARS} characters; delete some")
        data[key] = value
        write_json(self.path, data)

    def delete(self, key: str) -> bool:
        key = check_key(key)
        with _CHANGING:
            data = self._load()
            if key not in data:
                return False
            del data[key]
            write_json(self.path, data)
            return True

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._load() if k.startswith(prefix))


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise MemoryRefused("'key' must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise MemoryRefused(f"a key is at most {MAX_KEY_CHARS} characters")
    if not _KEY.fullmatch(key):
        raise MemoryRefused("a key cannot hold control characters (newlines, tabs)")
    return key
