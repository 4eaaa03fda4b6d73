"""A clock that moves only when a test moves it: the scheduler's tests never sleep."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, now: float) -> None:
        self._now = now
        self._sleepers: list[asyncio.Event] = []

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        while self._now < when:
            woken = asyncio.Event()
            self._sleepers.append(woken)
            await woken.wait()

    def set(self, now: float) -> None:
        """Move to ``now`` and wake whoever sleeps, to look whether their time came."""
        self._now = now
        sleepers, self._sleepers = self._sleepers, []
        for woken in sleepers:
            woken.set()
