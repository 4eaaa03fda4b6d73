"""One retry policy for the host side: exponential backoff with full jitter.

Every loop that waits before trying again (a store write, a platform call, Docker's event
stream, an adapter process, an agent that crashed) asks a ``Backoff`` how long, so there is one
place to read and one table to test::

    >>> Backoff(base=0.5, cap=60).delay(3, rand=1.0)   # 0.5 * 2**3
    4.0
    >>> Backoff(base=0.5, cap=60).delay(3, retry_after=7.0)   # the platform said so
    7.0

The agent inside its container keeps its own (standard library only).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5  # seconds before the second try (at most: the jitter takes a share of it)
    cap: float = 60.0
    factor: float = 2.0
    jitter: bool = True  # full jitter: a random share of the delay, so retries do not align

    def delay(
        self, attempt: int, retry_after: float | None = None, rand: float | None = None
    ) -> float:
        """Seconds to wait after failed try number ``attempt`` (0 for the first failure).

        A platform's own ``retry_after`` wins: it knows when it will take us again."""
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.cap, self.base * self.factor ** max(attempt, 0))
        if not self.jitter:
            return ceiling
        return ceiling * (random.random() if rand is None else rand)


STORE = Backoff(base=0.5, cap=30.0, jitter=False)  # a full disk: steady, predictable retries
PLATFORM = Backoff(base=0.5, cap=60.0)  # sends and polls of a chat platform
RESTART = Backoff(base=0.5, cap=30.0)  # a process or stream to start again
AGENT = Backoff(base=1.0, cap=30.0)  # a task whose agent crashed


class Retrier:
    """Counts failures in a row and sleeps the policy's delay; ``reset`` after a success.

    For loops that run for ever (a poll, an event stream) rather than one call to repeat."""

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        delay = self.policy.delay(self.failures, retry_after)
        self.failures += 1
        return delay

    async def wait(self, retry_after: float | None = None) -> float:
        delay = self.next_delay(retry_after)
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.failures = 0


async def until_done(
    action: Callable[[], Awaitable[T]],
    transient: type[BaseException] | tuple[type[BaseException], ...],
    policy: Backoff,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Await ``action()`` until it does not raise ``transient``; anything else propagates.

    For work already done that must be recorded (a reply the agent wrote): it must not be lost
    or done again, so the write is retried for as long as it takes."""
    retrier = Retrier(policy)
    while True:
        try:
            return await action()
        except transient as exc:
            delay = retrier.next_delay()
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)
