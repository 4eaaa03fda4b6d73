"""Waiting for a condition, the one way the tests wait.

A test never sleeps for a fixed time: it waits until what it expects is true, and fails
naming it when that never happens::

    await until(lambda: channel.attempts, what="a first send attempt")
    await until(lambda: store.pending_replies("telegram"), what="...")  # async works too

The fakes that can announce a change (``FakeTelegram.wait_for_sent``, ``MemoryChannel.wait_sent``)
wake their waiters themselves; `until` is for everything else, and polls.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL_INTERVAL = 0.005
"""How often `until` looks again: short, so a test goes on as soon as its condition holds."""


async def until(
    condition: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 30.0,
    what: str = "the condition",
) -> None:
    """Until ``condition()`` (or the value it awaits to) is truthy.

    Raises ``TimeoutError("... waited 30s for {what}")`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        await asyncio.sleep(POLL_INTERVAL)
