"""A TCP port anyone on the host can reach (the dashboard, the metrics port, a platform's
webhook), held so that a flood of connections costs a few file descriptors, not all of them.

Without it, 20,000 idle connections from any local user took every descriptor the orchestrator
had, and an agent's next model call failed with "Too many open files". So each port gets:

| cap (default) | enforced by | past it |
| --- | --- | --- |
| connections open at once (``max_connections``) | ``CappedSite``, on accept | 503, closed |
| request line, one header, header count (8 KiB, 8 KiB, 64) | aiohttp's parser | 400, closed |
| a request head within ``idle_timeout`` of connecting or of the last answer | ``_Guard`` | closed |
| a body nobody reads (a refusal before it) | aiohttp, ``lingering_time`` 0 | closed, unread |

A request being answered (the dashboard's event stream, a webhook waiting for its commit) is
not idle. The per-agent sockets have their own caps (``door/caps.py``); ``limits`` holds the
settings and the process's open-files budget the caps are sized in.

Only aiohttp's public surface is used: ``web.Server`` is the protocol factory every site hands
to asyncio, and each connection's protocol is wrapped rather than subclassed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from ..obs.logging import get_logger
from .limits import PortLimits

# Connections waiting to be accepted. asyncio accepts up to this many per wake-up, each holding
# a descriptor until the turned-away ones are closed: kept small, for the reserve.
BACKLOG = 32


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Listener:
    """One port: its limits, its open connections, and the middleware that tells a
    connection when it is busy with a request (so that it is not closed as idle).

    >>> listener = Listener("dashboard", PortLimits())
    >>> app = web.Application(middlewares=[listener.track])
    >>> # runner = web.AppRunner(app, **listener.limits.handler_kwargs()); await runner.setup()
    >>> # port = await listener.serve(runner, "127.0.0.1", 0)
    """

    def __init__(self, name: str, limits: PortLimits) -> None:
        self.name = name
        self.limits = limits
        # Counted from the moment a connection is accepted (asyncio calls connection_made a
        # little later, too late under a flood). Weak: a connection whose transport could
        # not be made is forgotten.
        self.open: weakref.WeakSet[_Guard] = weakref.WeakSet()
        self._by_transport: dict[asyncio.BaseTransport, _Guard] = {}

    async def serve(self, runner: web.BaseRunner, host: str, port: int) -> int:
        """Listen on ``host:port`` for ``runner`` (set up); returns the port bound."""
        site = CappedSite(runner, host, port, self)
        await site.start()
        return site.port

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._by_transport.get(request.transport) if request.transport else None
        if guard is None:
            return await handler(request)
        guard.began()
        try:
            return await handler(request)
        finally:
            guard.ended()

    def accept(self, server: web.Server | None) -> asyncio.BaseProtocol:
        """The protocol for a connection just accepted: aiohttp's, guarded, or a refusal."""
        if server is None or len(self.open) >= self.limits.max_connections:
            get_logger().warning(
                "connection_refused",
                port=self.name,
                reason="too_many_connections",
                limit=self.limits.max_connections,
            )
            return TurnAway(TURNED_AWAY)
        guard = _Guard(cast(asyncio.Protocol, server()), self)
        self.open.add(guard)
        return guard

    def connected(self, guard: _Guard, transport: asyncio.BaseTransport) -> None:
        self._by_transport[transport] = guard

    def lost(self, guard: _Guard, transport: asyncio.BaseTransport | None) -> None:
        self.open.discard(guard)
        if transport is not None:
            self._by_transport.pop(transport, None)


class _Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped: closed when no request head has arrived
    within ``idle_timeout`` of connecting or of the last answer (a client that says nothing,
    or trickles a head byte by byte)."""

    def __init__(self, inner: asyncio.Protocol, listener: Listener) -> None:
        self.inner = inner
        self.listener = listener
        self.transport: asyncio.BaseTransport | None = None
        self.busy = 0  # requests being answered
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.listener.connected(self, transport)
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.listener.lost(self, self.transport)
        self.inner.connection_lost(exc)

    def began(self) -> None:
        self.busy += 1
        self._disarm()

    def ended(self) -> None:
        self.busy -= 1
        if not self.busy and self.transport is not None and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.listener.limits.idle_timeout, self._overdue)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overdue(self) -> None:
        self._deadline = None
        if not self.busy and self.transport is not None:
            self.transport.close()


def turned_away(content_type: str, body: bytes) -> bytes:
    """The whole answer to a connection over its cap: a 503, try again in a second."""
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {content_type}\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


TURNED_AWAY = turned_away("text/plain", b"too many connections; try again shortly\n")


class TurnAway(asyncio.Protocol):
    """For a connection over the cap (here, and on an agent's socket): write ``answer`` and
    close, without reading a byte."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports write as asyncio's do, without deriving from WriteTransport
        cast(asyncio.WriteTransport, transport).write(self.answer)
        transport.close()


class CappedSite(web.BaseSite):
    """aiohttp's ``TCPSite``, with ``Listener.accept`` as the protocol factory."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, listener: Listener) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host = host
        self._port = port
        self._listener = listener

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The port bound (the real one when 0 was asked)."""
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._listener.accept(self._runner.server),
            self._host,
            self._port,
            backlog=BACKLOG,
        )
