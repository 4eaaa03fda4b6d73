"""The door: what every agent's socket enforces before, and around, a route's handler.

Whatever arrives on an agent's socket may come from code the agent was tricked into running,
so each agent gets caps of its own, and none of them can be spent by another agent:

| cap (default) | enforced by | past it |
| --- | --- | --- |
| connections open at once (64) | ``DoorSite``, on accept | a 503 written, closed |
| request line, one header, header count (8 KiB, 8 KiB, 32) | aiohttp's parser | 400, closed |
| a request head within 5 s of connecting or of the last answer | ``DoorConnection`` | closed |
| a ``Content-Length`` under the route cap (1 MiB, 20 MiB) | ``Door.json_body``, unread | 411, 413 |
| bytes of bodies in flight (32 MiB), reserved from the header | ``Door.json_body`` | 429 |
| the whole body within 10 s | ``Door.json_body`` | 408, closed |
| parsing: over 64 KiB in a thread, one body at a time | ``Door.json_body`` | waits its turn |
| nesting (100 levels, ``safejson.MAX_DEPTH``) | ``parse_body`` | 400 |

A request the agent holds open (``GET /v1/tasks/next``) is idle *after* its head: no deadline.
Every refusal is logged as ``agent_request_refused`` with a snake_case reason, at most a few
lines a second per agent and reason (the log pipeline's ``RepeatLimiter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from clawpen_agent.protocol import MAX_RESULT_BYTES, ProtocolError, parse_json

from ..obs.logging import get_logger
from ..ports.listener import TurnAway, turned_away
from ..ports.safejson import TooDeep, check_depth
from ..threads import run_in

KiB = 1024
MiB = 1024 * KiB
BACKLOG = 32  # connections waiting to be accepted, per agent
# Large bodies are parsed off the loop, in threads of their own (``threads.py``): one per agent
# at a time (``Door._parsing``), and the loop's default pool is never what they wait for.
PARSE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="clawpen-parse")


@dataclass(frozen=True)
class DoorLimits:
    max_connections: int = 64
    max_line_size: int = 8190  # the request line
    max_field_size: int = 8190  # one header
    max_headers: int = 32
    head_timeout: float = 5.0  # seconds for a request head, from connecting or the last answer
    body_timeout: float = 10.0  # seconds for a whole body, once its head arrived
    body_budget: int = 32 * MiB  # bytes of request bodies in flight
    result_body_max: int = MAX_RESULT_BYTES
    messages_body_max: int = 20 * MiB
    inline_parse_max: int = 64 * KiB  # larger bodies are parsed in a thread, one at a time

    def handler_kwargs(self) -> dict[str, Any]:
        """aiohttp's per-connection settings. Its keep-alive timer closes an idle connection
        as the head deadline does (``DoorConnection`` enforces that one itself); lingering 0
        closes a connection whose body was refused instead of reading it to the end."""
        return {
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
            "keepalive_timeout": self.head_timeout,
            "lingering_time": 0,
            "access_log": None,
        }


class Refused(Exception):
    """A request the door will not serve: status, a snake_case reason, a one-line message."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


def log_refusal(agent_id: str, reason: str, **details: Any) -> None:
    """One ``agent_request_refused`` line; the log pipeline holds back a flood of the same one
    (``logging.RepeatLimiter``: per event, agent and reason) and says how many it left out."""
    get_logger().warning("agent_request_refused", agentId=agent_id, reason=reason, **details)


def log_failure(agent_id: str, exc: BaseException) -> None:
    """A handler raised: a bug of ours, logged with its traceback (and limited the same way)."""
    get_logger().error(
        "agent_request_failed", agentId=agent_id, reason="internal_error", exc_info=exc
    )


class Door:
    """One agent's caps that span its connections: the body budget and the parser's turn."""

    def __init__(self, agent_id: str, limits: DoorLimits) -> None:
        self.agent_id = agent_id
        self.limits = limits
        self.body_bytes = 0  # reserved by bodies being read or used now
        self._parsing = asyncio.Lock()

    def refused(self, refusal: Refused) -> None:
        log_refusal(self.agent_id, refusal.reason, status=refusal.status, error=refusal.message)

    @contextlib.asynccontextmanager
    async def json_body(self, request: web.Request, limit: int) -> AsyncIterator[tuple[bytes, Any]]:
        """The body, read and parsed under the caps, as ``(raw, parsed)``; raises ``Refused``.
        Its bytes count against the budget until the ``async with`` ends."""
        size = request.content_length
        if size is None:
            raise Refused(411, "length_required", "send the body with a Content-Length")
        if size > limit:
            raise Refused(413, "body_too_large", f"body of {size} bytes, over {limit}")
        if self.body_bytes + size > self.limits.body_budget:
            raise Refused(
                429,
                "body_budget_exhausted",
                f"over {self.limits.body_budget} bytes of bodies in flight from this agent",
                retry_after=1,
            )
        self.body_bytes += size
        try:
            try:
                async with asyncio.timeout(self.limits.body_timeout):
                    raw = await request.read()
            except TimeoutError:
                raise Refused(
                    408, "body_timeout", f"body not sent within {self.limits.body_timeout:g}s"
                ) from None
            try:
                parsed = await self._parse(raw)
            except ProtocolError as exc:
                raise Refused(400, "invalid_body", str(exc)) from None
            yield raw, parsed
        finally:
            self.body_bytes -= size

    async def _parse(self, raw: bytes) -> Any:
        if len(raw) <= self.limits.inline_parse_max:
            return parse_body(raw)
        async with self._parsing:  # one agent's giant bodies queue behind each other only
            parse = asyncio.ensure_future(run_in(PARSE_THREADS, parse_body, raw))
            parse.add_done_callback(_retrieve)
            try:
                return await asyncio.shield(parse)
            finally:
                if not parse.done():  # the agent hung up: keep its turn until the thread ends
                    await asyncio.wait([parse])


def parse_body(raw: bytes) -> Any:
    """``parse_json`` (its cap on values bounds the depth check's work too), then the depth
    cap: a body nested 900 deep parses, and then breaks whatever walks it (a 500)."""
    value = parse_json(raw)
    try:
        check_depth(value, raw)
    except TooDeep as exc:
        raise ProtocolError(str(exc)) from None
    return value


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # seen: a parse nobody waits for any more is not an error


class DoorConnection(RequestHandler):
    """aiohttp's per-connection protocol, plus what the door wants to know about it: whether
    it ever carried a whole request, and its errors as one-line JSON, logged without storms."""

    def __init__(
        self,
        manager: web.Server,
        *,
        door: Door,
        on_lost: Callable[[DoorConnection], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.door = door
        self.on_lost = on_lost
        self.requests = 0  # begun on this connection
        self.busy = False
        self.pending = 0  # bytes received since the last request ended
        self.closing = False  # refused or answered an error: it closes, nothing left to report
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._await_head()

    def _await_head(self) -> None:
        """A whole request head must arrive within ``head_timeout`` of connecting or of the
        last answer, else the connection is closed (a slowloris, or a client that connects
        and says nothing). Kept here, not left to aiohttp's keep-alive timer, whose arming
        for a fresh connection differs between its versions."""
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.door.limits.head_timeout, self._head_overdue)

    def _head_overdue(self) -> None:
        self._deadline = None
        if not self.busy and self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        super().data_received(data)

    def request_began(self) -> None:
        self.requests += 1
        self.busy = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def request_ended(self, body_read: bool) -> None:
        self.busy = False
        self.pending = 0
        self.closing = self.closing or not body_read  # aiohttp closes it: lingering_time is 0
        if not self.closing and self.transport is not None:
            self._await_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.on_lost(self)
        if self.closing or self.busy:
            return
        if self.pending:  # a head that never completed: too slow, or the client gave up
            log_refusal(self.door.agent_id, "incomplete_request", bytes=self.pending)
        elif not self.requests:
            log_refusal(self.door.agent_id, "no_request")

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Called by aiohttp for a head it cannot parse (400) and for a handler that raised
        (500): answer in one JSON line and close, instead of logging a traceback each time."""
        self.closing = True
        if status == 500:
            log_failure(self.door.agent_id, exc or RuntimeError(message))
            text = "internal error; see the orchestrator's log"
        else:
            reason = "request_head_too_large" if _too_large(exc) else "malformed_request"
            text = (message or "bad request").splitlines()[0][:200]
            log_refusal(self.door.agent_id, reason, status=status, error=text)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; closing the connection instead")
        response = web.json_response({"accepted": False, "error": text}, status=status)
        response.force_close()
        return response


def _too_large(exc: BaseException | None) -> bool:
    return isinstance(exc, LineTooLong) or "too many headers" in str(exc).lower()


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tells the connection when a request begins and ends (see ``DoorConnection``)."""
    connection = request.protocol
    if not isinstance(connection, DoorConnection):
        response: web.StreamResponse = await handler(request)
        return response
    connection.request_began()
    try:
        response = await handler(request)
        return response
    finally:
        connection.request_ended(body_read=request.content.is_eof())


TURNED_AWAY = turned_away(
    "application/json",
    b'{"accepted": false, "error": "too many connections open from this agent"}',
)


class DoorSite(web.BaseSite):
    """aiohttp's ``UnixSite``, with the connection cap applied as each connection is accepted:
    past it the file descriptor is closed at once, so one agent cannot exhaust the process's."""

    def __init__(self, runner: web.BaseRunner, path: str, door: Door) -> None:
        super().__init__(runner)
        self._path = path
        self._door = door
        # Counted from the moment a connection is accepted (aiohttp's own list only from its
        # first callback, a few too late under a flood). Weak: one whose transport could not be
        # made is never closed, only forgotten.
        self._open: weakref.WeakSet[DoorConnection] = weakref.WeakSet()

    @property
    def name(self) -> str:
        return f"http://unix:{self._path}:"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # asyncio accepts up to ``backlog`` connections per wake-up before the turned-away
        # ones are closed: a small one keeps a flood's passing file descriptors few.
        self._server = await loop.create_unix_server(self._connect, self._path, backlog=BACKLOG)

    def _connect(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        limits = self._door.limits
        if server is None or len(self._open) >= limits.max_connections:
            log_refusal(self._door.agent_id, "too_many_connections", limit=limits.max_connections)
            return TurnAway(TURNED_AWAY)
        connection = DoorConnection(
            server,
            door=self._door,
            on_lost=self._open.discard,
            loop=asyncio.get_running_loop(),
            **limits.handler_kwargs(),
        )
        self._open.add(connection)
        return connection
