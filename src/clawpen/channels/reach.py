"""An adapter that cannot reach its platform stays up and tries again: one place for every one.

The runner (``runner.py``) runs each adapter through ``keep_reaching``: when the adapter's
``run`` fails because nothing answered (connection refused, no route, a name that does not
resolve, a timeout, a TLS failure), the process does not exit into a restart loop. It says so
once, with the cause (``cannot reach https://api.telegram.org (connection refused); retrying in
30 s``), tells the core (``clawpen status`` shows ``unreachable`` and that line) and runs the
adapter again after a growing delay. The adapter calls ``connected(accept)`` once it has talked
to its platform: the state goes back to ``running``, said once too. Any other failure ends the
adapter as before (the core restarts it).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from ..obs.logging import get_logger
from ..retry import Backoff

POLICY = Backoff(base=2.0, cap=30.0, jitter=False)  # 2, 4, 8, 16, 30, 30 s...
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    }
)
ENDPOINT_FIELDS = ("api_base_url", "host")  # where each platform's settings name the platform

Report = Callable[[str, str], Awaitable[None]]
"""Tells the core the channel's state (``running`` | ``unreachable``) and its cause."""


def cause_of(exc: BaseException) -> str | None:
    """Why nothing answered, when that is what ``exc`` (or what it was raised from) says; None
    for any other failure. The client libraries wrap the socket's error (python-telegram-bot's
    NetworkError from httpx's ConnectError from OSError), so the whole chain is looked at."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLError):
            return f"TLS: {error.reason or error}".lower()
        if isinstance(error, socket.gaierror):
            return "host name not resolved"
        if isinstance(error, OSError) and error.errno in NETWORK_ERRNOS:
            return os.strerror(error.errno).lower()  # asyncio's strerror names the address
        if isinstance(error, TimeoutError):
            return "timed out"
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        stack.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return None


def endpoint_of(settings: Any) -> str:
    """The platform's address as its settings name it: ``https://api.telegram.org``."""
    server = getattr(settings, "imap", None)  # e-mail: its IMAP server
    if server is not None:
        return f"{server.host}:{server.port}"
    for field in ENDPOINT_FIELDS:
        value = getattr(settings, field, None)
        if isinstance(value, str) and value:
            parts = urlsplit(value)
            if parts.scheme and parts.netloc:
                return f"{parts.scheme}://{parts.netloc}"
            port = getattr(settings, "port", None)
            return f"{value}:{port}" if port else value
    return "the platform"


class Reachability:
    """The adapter's state as the core sees it; each change is logged once and reported."""

    def __init__(self, channel: str, endpoint: str, report: Report) -> None:
        self.channel = channel
        self.endpoint = endpoint
        self.report = report
        self.failures = 0
        self.cause: str | None = None  # None: reachable (or not tried yet)
        self.log = get_logger()

    async def unreachable(self, cause: str) -> float:
        """Record a failure; returns how long to wait before the next try."""
        delay = POLICY.delay(self.failures)
        self.failures += 1
        line = f"cannot reach {self.endpoint} ({cause}); retrying in {delay:.0f} s"
        if cause != self.cause:
            self.log.warning("channel_unreachable", channel=self.channel, error=line)
        self.cause = cause
        await self.report("unreachable", line)
        return delay

    async def connected(self) -> None:
        self.failures = 0
        if self.cause is not None:
            self.log.info("channel_reachable", channel=self.channel, endpoint=self.endpoint)
            self.cause = None
            await self.report("running", "")


async def keep_reaching(run: Callable[[], Awaitable[None]], reach: Reachability) -> None:
    """``run`` (the adapter) again and again while its platform cannot be reached."""
    while True:
        try:
            await run()
            return
        except Exception as exc:
            cause = cause_of(exc)
            if cause is None:
                raise
        await asyncio.sleep(await reach.unreachable(cause))
