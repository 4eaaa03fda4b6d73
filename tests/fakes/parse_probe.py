"""A stand-in for the door's JSON parser that takes its time, to see where and how many parse
at once."""

from __future__ import annotations

import json
import threading
import time
from typing import Any


class ParseProbe:
    """Stands in for ``parse_json``: slow, and records where and how many ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, raw: bytes) -> Any:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)  # its pace: a large body taking its time
        with self.lock:
            self.running -= 1
        return json.loads(raw)
