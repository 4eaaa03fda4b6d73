"""The door: what every agent's socket enforces before, and around, a route's handler.

Whatever arrives on an agent's socket may come from code the agent was tricked into running,
so each agent gets caps of its own, and none of them can be spent by another agent:

| cap (default) | enforced by | past it |
| --- | --- | --- |
| connections open at once (64) | the agent's ``Listener``, on accept | a 503 written, closed |
| request line, one header, header count (8 KiB, 8 KiB, 32) | ``Listener``, ``heads`` | 400 |
| a request head within 5 s of connecting or of the last answer | ``Listener`` | closed |
| a ``Content-Length`` under the route cap (1 MiB, 20 MiB) | ``Door.json_body``, unread | 411, 413 |
| bytes of bodies in flight (32 MiB), reserved from the header | ``Door.json_body`` | 429 |
| the whole body within 10 s | ``Door.json_body`` | 408, closed |
| parsing: over 64 KiB in a thread, one body at a time | ``Door.json_body`` | waits its turn |
| nesting (100 levels, ``safejson.MAX_DEPTH``) | ``parse_body`` | 400 |

A request the agent holds open (``GET /v1/tasks/next``) is idle *after* its head: no deadline.
Every refusal is logged as ``agent_request_refused`` with a snake_case reason, at most a few
lines a second per agent and reason (the log pipeline's ``RepeatLimiter``), and answered in one
line of JSON; a handler's bug is a JSON 500 (``Door.failures``) and one ``agent_request_failed``.

Only aiohttp's public surface: the connection caps are the public ports' (``ports/listener.py``),
aiohttp's own head limits are ``handler_kwargs`` (behind the listener's check), the body caps
are ``client_max_size`` and a bounded read, and the errors are a middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from clawpen_agent.protocol import MAX_RESULT_BYTES, ProtocolError, parse_json

from ..obs.logging import get_logger
from ..ports.heads import HeadLimits
from ..ports.listener import Handler, Listener, answer
from ..ports.safejson import TooDeep, check_depth
from ..threads import run_in

KiB = 1024
MiB = 1024 * KiB
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

    @property
    def idle_timeout(self) -> float:
        """The listener's name for the head deadline."""
        return self.head_timeout

    @property
    def heads(self) -> HeadLimits:
        return HeadLimits(self.max_line_size, self.max_field_size, self.max_headers)

    def handler_kwargs(self) -> dict[str, Any]:
        """aiohttp's per-connection settings. The head limits stand behind the listener's
        check (for a head pipelined behind another request); its keep-alive timer closes an
        idle connection as the head deadline does; lingering 0 closes a connection whose body
        was refused instead of reading it to the end."""
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


def json_answer(status: int, message: str) -> bytes:
    """A refusal written before aiohttp sees the request (a bad head, a connection over the
    cap), in the same one line of JSON as the door's other refusals."""
    body = json.dumps({"accepted": False, "error": message}).encode()
    return answer(status, "application/json", body, retry_after=1 if status == 503 else None)


TURNED_AWAY = json_answer(503, "too many connections open from this agent")


class Door:
    """One agent's caps: its connections and heads (``listener``), and those that span its
    connections, the body budget and the parser's turn.

    >>> door = Door("alice", DoorLimits())
    >>> app = web.Application(middlewares=door.middlewares)
    >>> # runner = web.AppRunner(app, **door.limits.handler_kwargs()); await runner.setup()
    >>> # await door.serve(runner, "/data/agents/alice/agent.sock")
    """

    def __init__(self, agent_id: str, limits: DoorLimits) -> None:
        self.agent_id = agent_id
        self.limits = limits
        self.body_bytes = 0  # reserved by bodies being read or used now
        self._parsing = asyncio.Lock()
        self.listener = Listener(
            f"agent:{agent_id}",
            limits,
            heads=limits.heads,
            reply=json_answer,
            turned_away=TURNED_AWAY,
            report=functools.partial(log_refusal, agent_id),
        )
        self.middlewares = [self.listener.track, self.failures]

    async def serve(self, runner: web.BaseRunner, path: str) -> None:
        """Listen on the agent's socket ``path`` for ``runner`` (set up, with ``middlewares``)."""
        await self.listener.serve_unix(runner, path)

    @web.middleware
    async def failures(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A handler that raised is a bug of ours: one line of JSON and a closed connection
        for the agent, one log line with the traceback for us (aiohttp's own answer would be
        plain text, and its log a traceback each time)."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # an answer (a 404, a 405), not a failure
        except TimeoutError:
            status, text = 504, "timed out"
            log_refusal(self.agent_id, "handler_timeout", status=status)
        except Exception as exc:
            status, text = 500, "internal error; see the orchestrator's log"
            log_failure(self.agent_id, exc)
        if request.transport is not None and request.writer.output_size > 0:
            request.transport.close()  # the answer had begun: cut it off, it cannot be mended
        response = web.json_response({"accepted": False, "error": text}, status=status)
        response.force_close()
        return response

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

    async def raw_body(self, request: web.Request, size: int) -> bytes:
        """Exactly ``size`` bytes of body (a file's), within the body deadline; raises
        ``Refused``. Outside the JSON bodies' budget: its route reads one at a time."""
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                return await request.content.readexactly(size)
        except TimeoutError:
            raise Refused(
                408, "body_timeout", f"body not sent within {self.limits.body_timeout:g}s"
            ) from None
        except asyncio.IncompleteReadError:
            raise Refused(400, "body_incomplete", "the body is shorter than its length") from None

    async def discard_body(self, request: web.Request, size: int) -> None:
        """Read a refused body off and drop it, so that the agent, still sending, reads the
        refusal instead of a broken connection; bounded by the body deadline."""
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            async with asyncio.timeout(self.limits.body_timeout):
                left = size
                while left > 0:
                    chunk = await request.content.read(min(left, 1024 * 1024))
                    if not chunk:
                        return
                    left -= len(chunk)

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
