"""A listening socket held so that a flood of connections costs a few file descriptors, not
all of them: the public TCP ports (dashboard, metrics port, a platform's webhook) and each
agent's Unix socket (the door, ``door/caps.py``) are served through one of these.

Without it, 20,000 idle connections from any local user took every descriptor the orchestrator
had, and an agent's next model call failed with "Too many open files". So each socket gets:

| cap (default for a port) | enforced by | past it |
| --- | --- | --- |
| connections open at once (``max_connections``) | ``Listener.accept``, on accept | 503, closed |
| a request head within ``idle_timeout`` of connecting or of the last answer | ``_Guard`` | closed |
| request line, one header, header count (8 KiB, 8 KiB, 64) | ``heads``, or aiohttp | 400, closed |
| a body nobody reads (a refusal before it) | aiohttp, ``lingering_time`` 0 | closed, unread |

A request being answered (the dashboard's event stream, a webhook waiting for its commit, an
agent's held-open request for work) is not idle. ``limits`` holds a port's settings and the
process's open-files budget the caps are sized in.

Only aiohttp's public surface is used: the protocol factory every site hands to asyncio is
``web.Server`` (``BaseRunner.server``), and each connection's protocol is wrapped, never
subclassed; heads are checked (``heads.py``) before aiohttp's parser sees them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web

from ..obs.logging import get_logger
from .heads import BadHead, HeadLimits, check_head

# Connections waiting to be accepted. asyncio accepts up to this many per wake-up, each holding
# a descriptor until the turned-away ones are closed: kept small, for the reserve.
BACKLOG = 32


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Reply = Callable[[int, str], bytes]  # status, one-line message -> the whole answer
Report = Callable[..., None]  # (reason, **details): a connection refused or closed


class Caps(Protocol):
    """What a listener needs of its settings (``PortLimits``, ``DoorLimits``)."""

    @property
    def max_connections(self) -> int: ...

    @property
    def idle_timeout(self) -> float: ...


def answer(status: int, content_type: str, body: bytes, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, written without aiohttp."""
    phrase = {400: "Bad Request", 503: "Service Unavailable"}.get(status, "Error")
    retry = "" if retry_after is None else f"Retry-After: {retry_after}\r\n"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n{retry}"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def turned_away(content_type: str, body: bytes) -> bytes:
    """The whole answer to a connection over its cap: a 503, try again in a second."""
    return answer(503, content_type, body, retry_after=1)


def plain(status: int, message: str) -> bytes:
    return answer(status, "text/plain", f"{message}\n".encode())


TURNED_AWAY = turned_away("text/plain", b"too many connections; try again shortly\n")


class Listener:
    """One listening socket: its caps, its open connections, and the middleware that tells a
    connection when it is busy with a request (so that it is not closed as idle).

    ``heads``, when given, are checked before aiohttp parses them, and a bad one is answered
    with ``reply`` (the door answers in JSON); ``report`` hears of every connection refused
    or closed unanswered (by default, log lines naming the port).

    >>> from clawpen.ports.limits import PortLimits
    >>> listener = Listener("dashboard", PortLimits())
    >>> app = web.Application(middlewares=[listener.track])
    >>> # runner = web.AppRunner(app, **listener.limits.handler_kwargs()); await runner.setup()
    >>> # port = await listener.serve(runner, "127.0.0.1", 0)
    """

    def __init__(
        self,
        name: str,
        limits: Caps,
        *,
        heads: HeadLimits | None = None,
        reply: Reply = plain,
        turned_away: bytes = TURNED_AWAY,
        report: Report | None = None,
    ) -> None:
        self.name = name
        self.limits = limits
        self.heads = heads
        self.reply = reply
        self.turned_away = turned_away
        self.report = report or self._log
        # Counted from the moment a connection is accepted (asyncio calls connection_made a
        # little later, too late under a flood). Weak: a connection whose transport could
        # not be made is forgotten.
        self.open: weakref.WeakSet[_Guard] = weakref.WeakSet()
        self._by_transport: dict[asyncio.BaseTransport, _Guard] = {}

    async def serve(self, runner: web.BaseRunner, host: str, port: int) -> int:
        """Listen on ``host:port`` for ``runner`` (set up); returns the port bound."""
        loop = asyncio.get_running_loop()

        async def listen() -> asyncio.AbstractServer:
            return await loop.create_server(self._factory(runner), host, port, backlog=BACKLOG)

        shown = f"[{host}]" if ":" in host else host
        site = CappedSite(runner, f"http://{shown}:{port}", listen)
        await site.start()
        return site.port or port

    async def serve_unix(self, runner: web.BaseRunner, path: str) -> None:
        """Listen on the Unix socket ``path`` for ``runner`` (set up)."""
        loop = asyncio.get_running_loop()

        async def listen() -> asyncio.AbstractServer:
            return await loop.create_unix_server(self._factory(runner), path, backlog=BACKLOG)

        await CappedSite(runner, f"http://unix:{path}:", listen).start()

    def _factory(self, runner: web.BaseRunner) -> Callable[[], asyncio.BaseProtocol]:
        return lambda: self.accept(runner.server)

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._by_transport.get(request.transport) if request.transport else None
        if guard is None:
            return await handler(request)
        guard.began()
        try:
            return await handler(request)
        finally:
            guard.ended(body_read=request.content.is_eof())

    def accept(self, server: web.Server | None) -> asyncio.BaseProtocol:
        """The protocol for a connection just accepted: aiohttp's, guarded, or a refusal."""
        if server is None or len(self.open) >= self.limits.max_connections:
            self.report("too_many_connections", limit=self.limits.max_connections)
            return TurnAway(self.turned_away)
        guard = _Guard(cast(asyncio.Protocol, server()), self)
        self.open.add(guard)
        return guard

    def connected(self, guard: _Guard, transport: asyncio.BaseTransport) -> None:
        self._by_transport[transport] = guard

    def lost(self, guard: _Guard, transport: asyncio.BaseTransport | None) -> None:
        self.open.discard(guard)
        if transport is not None:
            self._by_transport.pop(transport, None)

    def _log(self, reason: str, **details: Any) -> None:
        """A refusal is a warning; a connection closed for saying nothing is routine on a
        public port (a browser's spare connection), so only a debug line."""
        log = get_logger()
        if reason == "no_request" or reason == "incomplete_request":
            log.debug("connection_closed", port=self.name, reason=reason, **details)
        else:
            log.warning("connection_refused", port=self.name, reason=reason, **details)


class _Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped: closed when no request head has arrived
    within ``idle_timeout`` of connecting or of the last answer (a client that says nothing,
    or trickles a head byte by byte); with ``Listener.heads``, each head is held until it is
    whole and checked, and only a good one is handed to aiohttp."""

    def __init__(self, inner: asyncio.Protocol, listener: Listener) -> None:
        self.inner = inner
        self.listener = listener
        self.transport: asyncio.BaseTransport | None = None
        self.busy = 0  # requests being answered
        self.requests = 0  # begun on this connection
        self.handed = 0  # checked heads handed to aiohttp
        self.answered = 0  # requests ended
        self.checking = True  # heads are checked before aiohttp's parser sees them
        self.head = bytearray()  # bytes of a head not yet whole, held back
        self.body = 0  # bytes of a checked head's body still to come
        self.pending = 0  # bytes received since the last request ended
        self.closing = False  # refused, or its body left unread: it closes, nothing to report
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.listener.connected(self, transport)
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        heads = self.listener.heads
        if heads is None or not self.checking:
            self.inner.data_received(data)
            return
        while data:
            if self.body:  # a checked head's body, to aiohttp as it comes
                part, data = data[: self.body], data[self.body :]
                self.body -= len(part)
                self.inner.data_received(part)
                continue
            self.head += data
            verdict = check_head(bytes(self.head), heads)
            if verdict is None:
                return  # held until it is whole
            held, self.head = bytes(self.head), bytearray()
            if isinstance(verdict, BadHead):
                self._refuse(verdict, held)
                return
            self.handed += 1
            self.inner.data_received(held[: verdict.size])
            data = held[verdict.size :]
            if verdict.body is None:  # chunked: where it ends, and all after, is aiohttp's
                self.checking = False
                if data:
                    self.inner.data_received(data)
                return
            self.body = verdict.body

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
        if self.closing or self.busy:
            return
        if self.pending:  # a head that never completed: too slow, or the client gave up
            self.listener.report("incomplete_request", bytes=self.pending)
        elif not self.requests:
            self.listener.report("no_request")

    def began(self) -> None:
        self.busy += 1
        self.requests += 1
        self._disarm()

    def ended(self, body_read: bool) -> None:
        """A request answered. One whose body was not read to its end closes (aiohttp does
        not read it: ``lingering_time`` 0); otherwise the next head is awaited."""
        self.busy -= 1
        self.answered += 1
        self.pending = 0
        self.closing = self.closing or not body_read
        transport = self.transport
        if not self.busy and not self.closing and transport and not transport.is_closing():
            self._arm()

    def _refuse(self, bad: BadHead, held: bytes) -> None:
        """Answer a bad head and close. Behind requests not yet answered (pipelined), an
        answer now would land in the middle of theirs: aiohttp gets the head instead, and
        refuses it in its turn, under the same limits, in its own words. (A head sent after
        its predecessor's handler returned but before that answer is all out may see the two
        answers mixed: a client that does not wait for its answer garbles only its own.)"""
        self.listener.report(bad.reason, status=400, error=bad.message)
        if self.handed > self.answered:
            self.checking = False
            self.inner.data_received(held)
            return
        self.closing = True
        if self.transport is not None:
            say_and_close(self.transport, self.listener.reply(400, bad.message))

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


def say_and_close(transport: asyncio.BaseTransport, data: bytes) -> None:
    # uvloop's transports write as asyncio's do, without deriving from WriteTransport
    cast(asyncio.WriteTransport, transport).write(data)
    transport.close()


class TurnAway(asyncio.Protocol):
    """For a connection over the cap: write ``answer`` and close, without reading a byte."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        say_and_close(transport, self.answer)


Listen = Callable[[], Awaitable[asyncio.AbstractServer]]


class CappedSite(web.BaseSite):
    """aiohttp's ``TCPSite`` or ``UnixSite``, with ``Listener.accept`` as the protocol factory
    (``listen`` makes the server with it)."""

    def __init__(self, runner: web.BaseRunner, name: str, listen: Listen) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._name = name
        self._listen = listen

    @property
    def name(self) -> str:
        return self._name

    @property
    def port(self) -> int | None:
        """The TCP port bound (the real one when 0 was asked)."""
        sockets = getattr(self._server, "sockets", None) or []
        name = sockets[0].getsockname() if sockets else None
        return int(name[1]) if isinstance(name, tuple) else None

    async def start(self) -> None:
        await super().start()
        self._server = await self._listen()
