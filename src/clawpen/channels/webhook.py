"""A small HTTP server that platforms push events to (WhatsApp now; Telegram's webhook mode can
use it later), for adapters whose platform calls them instead of being polled.

It knows nothing of any platform. Its port is capped (``listener``: connections at once, idle
ones closed, heads bounded). A route's ``HeadCheck`` sees the method and headers before a byte
of the body is read (a POST without a signature is refused unread); then at most ``max_body``
bytes are read (the declared length is checked first), the request is handed as a plain value
to the route's handler, and what comes back is turned into an answer. A handler *decides*
with ``Refused(status, reason)`` (a forged signature: 401; a body that is not the platform's
shape: 400): that request is answered so and logged as one line, and the server goes on.

What it answers when things go wrong, and why:

* 4xx for anything the sender got wrong (too large 413, too slow 408, forged 401, malformed 400,
  unknown path 404, wrong method 405). A platform's webhook is never helped by us guessing.
* 503 when the handler raises ``StoreUnavailable``: the event was not committed, and every
  platform that pushes (Meta, Telegram) delivers again what was not answered 200. This is the one
  deliberate 5xx: answering anything else would make the platform give up on a message we do not
  have.
* 500 for a bug in a handler (any other exception). The server logs it with its traceback and
  lives on; the platform redelivers, so the message is not lost once the bug is fixed. We do not
  disguise a bug as a 4xx: then the fuzz tests (which assert "never a 5xx") could not find it.

Signatures are compared in constant time (``hmac.compare_digest``) so that the answer's timing
tells a forger nothing about how much of a guess was right.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import StoreUnavailable
from ..obs.logging import get_logger
from ..ports.limits import PortLimits
from ..ports.listener import Listener

MAX_BODY = 1024 * 1024  # Meta's and Telegram's events are a few kilobytes
SHUTDOWN_GRACE = 2.0
READ_TIMEOUT = 30.0  # seconds for the whole body: a trickling client is not waited on for ever


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive
    body: bytes  # exactly as received: signatures are over these bytes
    remote: str


@dataclass(frozen=True)
class WebhookResponse:
    status: int = 200
    text: str = ""


Handler = Callable[[WebhookRequest], Awaitable[WebhookResponse]]
HeadCheck = Callable[[str, Mapping[str, str]], None]  # (method, headers); raises Refused


class Refused(Exception):
    """A handler's verdict on a request it will not act on: answered ``status`` (4xx) and
    logged with ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sha256_signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is ``sha256=`` and the hex HMAC-SHA256 of ``body`` under ``secret``
    (Meta's ``X-Hub-Signature-256``). Constant time in what the header holds."""
    if header is None:
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    given = header.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected.encode(), given)


def secret_matches(expected: str, given: str | None) -> bool:
    """A shared secret sent as is (Telegram's ``X-Telegram-Bot-Api-Secret-Token``), compared in
    constant time."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8787"`` -> ``("127.0.0.1", 8787)``; ``"[::1]:8787"`` for IPv6."""
    host, colon, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT (for example 127.0.0.1:8787)")
    return host, int(port)


class WebhookServer:
    """Serves ``routes`` (path -> handler) on ``host:port`` for as long as ``running`` is open.

    ``name`` goes on its log lines (``channel=whatsapp``)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        routes: Mapping[str, Handler],
        max_body: int = MAX_BODY,
        limits: PortLimits | None = None,
        head_checks: Mapping[str, HeadCheck] | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self.max_body = max_body
        self.limits = limits or PortLimits(max_connections=64)
        self.head_checks = dict(head_checks or {})
        self.log = get_logger()
        self.url = ""  # http://host:port once listening (the real port when 0 was asked)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Listen; yields the base URL. Raises ``OSError`` when the address cannot be bound."""
        listener = Listener(f"webhook:{self.name}", self.limits)
        app = web.Application(client_max_size=self.max_body, middlewares=[listener.track])
        app.router.add_route("*", "/{path:.*}", self._serve)
        # on stop, a request still waiting for its commit gets a moment, then is cut off: its
        # sender never had a 200, so it delivers again
        runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE,
            **self.limits.handler_kwargs(),
        )
        await runner.setup()
        try:
            port = await listener.serve(runner, self.host, self.port)
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.url = f"http://{host}:{port}"
            self.log.info("webhook_listening", channel=self.name, url=self.url)
            yield self.url
        finally:
            await runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            handler = self.routes.get(request.path)
            if handler is None:
                raise Refused(404, "no such path")
            if request.method not in ("GET", "POST"):
                raise Refused(405, f"method {request.method[:16]} not allowed")
            check = self.head_checks.get(request.path)
            if check is not None:
                check(request.method, request.headers)
            body = await self._read_body(request)
            incoming = WebhookRequest(
                method=request.method,
                path=request.path,
                query=request.query,
                headers=request.headers,
                body=body,
                remote=request.remote or "",
            )
            answer = await handler(incoming)
        except Refused as refused:
            self.log.warning(
                "webhook_refused",
                channel=self.name,
                status=refused.status,
                reason=refused.reason,
                method=request.method[:16],
                path=request.path[:200],
                remote=request.remote,
            )
            return web.Response(status=refused.status, text=_reason_text(refused.status))
        except StoreUnavailable as exc:
            self.log.error("webhook_not_committed", channel=self.name, error=str(exc))
            return web.Response(status=503, text="try again later")
        except Exception:
            self.log.exception("webhook_handler_error", channel=self.name, path=request.path)
            return web.Response(status=500, text="internal error")
        return web.Response(status=answer.status, text=answer.text)

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, refused before it is read when it says it is too long, and while it is
        read when it turns out so (a chunked body declares nothing)."""
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            raise Refused(413, f"body of {declared} bytes is over the {self.max_body} limit")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > self.max_body:
                        raise Refused(413, f"body is over the {self.max_body} limit")
                    chunks.append(chunk)
        except TimeoutError:
            raise Refused(408, "body not received in time") from None
        except (ClientError, HttpProcessingError, ConnectionError) as exc:  # a broken chunk
            raise Refused(400, f"body could not be read: {type(exc).__name__}") from None
        return b"".join(chunks)


def _reason_text(status: int) -> str:
    """A fixed word for the answer: nothing the sender can learn from our reasons."""
    return {
        400: "bad request",
        401: "unauthorized",
        403: "forbidden",
        404: "not found",
        405: "method not allowed",
        408: "request timeout",
        413: "payload too large",
    }.get(status, "refused")
