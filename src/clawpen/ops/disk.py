"""Free space under data_dir: warnings as it runs low, and new work refused before it runs out.

SQLite survives a full disk (the write is refused and retried), but by then replies and
state changes already wait behind it. Refusing *new* messages while ``reserve_mb`` is still free
keeps that space for finishing the work already accepted: a refused message is not
acknowledged, so the platform keeps it and delivers it again once space is freed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import StoreUnavailable
from ..obs.logging import get_logger

WARN_FREE_PERCENT = (20.0, 10.0, 5.0)  # a warning each time free space falls below one


class Usage(NamedTuple):
    total: int
    used: int
    free: int


UsageOf = Callable[[Path], Usage]


def _usage(path: Path) -> Usage:
    total, used, free = shutil.disk_usage(path)
    return Usage(total, used, free)


class DiskGuard:
    """Looks at the disk at most once every ``interval`` seconds (statvfs is cheap, but not
    free on every message)."""

    def __init__(
        self,
        path: Path,
        reserve_mb: int = 64,
        usage: UsageOf = _usage,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.reserve = reserve_mb * 1024 * 1024
        self._usage = usage
        self._clock = clock
        self._interval = interval
        self._checked_at = -interval
        self._last: Usage | None = None
        self._warned_below: float | None = None  # the lowest threshold already warned about
        self._refusing = False
        self.log = get_logger()

    def check(self) -> Usage | None:
        """Measure (if due), log a threshold crossed, and return the usage."""
        now = self._clock()
        if now - self._checked_at < self._interval and self._last is not None:
            return self._last
        self._checked_at = now
        try:
            usage = self._usage(self.path)
        except OSError as exc:
            self.log.warning("disk_unreadable", path=str(self.path), error=str(exc))
            return None
        self._last = usage
        percent = 100.0 * usage.free / usage.total if usage.total else 100.0
        below = [t for t in WARN_FREE_PERCENT if percent < t]
        lowest = min(below) if below else None
        if lowest is not None and (self._warned_below is None or lowest < self._warned_below):
            self.log.warning(
                "disk_space_low",
                path=str(self.path),
                freeMb=usage.free // 2**20,
                freePercent=round(percent, 1),
                fix="free disk space under data_dir",
            )
        self._warned_below = lowest
        refusing = usage.free < self.reserve
        if refusing != self._refusing:
            self._refusing = refusing
            if refusing:
                self.log.error(
                    "disk_refusing_new_work",
                    path=str(self.path),
                    freeMb=usage.free // 2**20,
                    reserveMb=self.reserve // 2**20,
                )
            else:
                self.log.info("disk_accepting_new_work", freeMb=usage.free // 2**20)
        return usage

    def admit(self) -> None:
        """Raise ``StoreUnavailable`` when new work must wait for disk space."""
        self.check()
        if self._refusing:
            raise StoreUnavailable(
                f"only {self._last.free // 2**20 if self._last else 0} MB free under"
                f" {self.path}; new messages wait until {self.reserve // 2**20} MB are free",
                "free disk space; the platforms deliver the messages again",
            )

    def describe(self) -> dict[str, Any]:
        usage = self.check()
        if usage is None:
            return {"path": str(self.path), "error": "cannot read the free space"}
        return {
            "path": str(self.path),
            "free_mb": usage.free // 2**20,
            "total_mb": usage.total // 2**20,
            "reserve_mb": self.reserve // 2**20,
            "refusing_new_work": self._refusing,
        }
