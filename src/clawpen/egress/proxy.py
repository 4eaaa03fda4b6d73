"""Egress, off by default: an HTTP proxy per agent, for the hosts its operator allowed.

An agent with ``egress.allow`` gets a second socket, ``egress.sock``, beside its agent socket
(so the socket is still the identity). Its container has no network; a loopback forwarder in
it (``clawpen_agent/forwarder.py``, on ``127.0.0.1:3128``, named by ``HTTPS_PROXY``) relays
each connection here. This end speaks the two proxy requests clients send:

* ``CONNECT host:port`` (https, git, pip): a tunnel of bytes once the target is allowed;
* ``GET http://host:port/path`` (plain http): forwarded once, ``Connection: close``.

A target is served only when its host (and port: ``host`` alone means 443 and 80) is on the
agent's list, and every address it resolves to passes ``netpolicy.check_address`` (none of
them the host's own, ``hostaddrs.py``); the connection goes to the checked address. Everything
else is answered 403 and logged (``egress_refused``), unless the agent's approvals ask about
egress: then ``ask(host, port)`` (``core/approvals.py``) holds the connection until a person
allows the target (once, or from now on) or denies it. What the tunnel carries is not
inspected: it goes to an allowed host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..obs.logging import get_logger
from .hostaddrs import host_addresses
from .netpolicy import IPAddress, LoopbackExceptions, Refused, Target, parse_target
from .webfetch import OwnAddresses, Resolve, checked_addresses, system_resolve

AskEgress = Callable[[str, int], Awaitable[str | None]]
"""Asks a person about a target off the list: None when allowed, else why not."""
OpenConnection = Callable[
    [IPAddress, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
]
HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 32
_HOP_HEADERS = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"te"}
)


class BadRequest(Exception):
    """Not a proxy request this proxy speaks."""


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: Target
    head: bytes  # for a forwarded http request: the head to send upstream; b"" for CONNECT


def parse_proxy_request(head: bytes) -> ProxyRequest:
    """Pure: a request head (up to the blank line) -> what to connect to and send.

    >>> parse_proxy_request(b"CONNECT pypi.org:443 HTTP/1.1\\r\\nHost: pypi.org\\r\\n\\r\\n").target
    Target(scheme='https', host='pypi.org', port=443, path='/', ip=None)
    """
    lines = head.split(b"\r\n")
    try:
        method, where, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("not an HTTP request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest("only HTTP/1.x")
    if method == "CONNECT":
        host, colon, port = where.rpartition(":")
        if not colon or not port.isdigit():
            raise BadRequest("CONNECT needs host:port")
        return ProxyRequest(method, parse_target(f"https://{host}:{port}/"), b"")
    if not where.lower().startswith("http://"):
        raise BadRequest("send CONNECT, or an absolute http:// URL")
    target = parse_target(where)
    kept = [
        line
        for line in lines[1:]
        if line and line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS | {b"host"}
    ]
    start = f"{method} {target.path} HTTP/1.1".encode("ascii")
    host_line = f"Host: {target.host_header}".encode("ascii")  # the URL's, no other vhost
    upstream = b"\r\n".join([start, host_line, *kept, b"Connection: close", b"", b""])
    return ProxyRequest(method, target, upstream)


def egress_allowed(target: Target, allow: list[str]) -> bool:
    """``pypi.org`` allows pypi.org on 443 and 80; ``pypi.org:8443`` that port only. Exact
    hosts: a listed domain does not let its subdomains through."""
    return f"{target.host}:{target.port}" in allow or (
        target.host in allow and target.port in (443, 80)
    )


async def system_open(
    ip: IPAddress, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(ip), port)


class EgressProxy:
    """One agent's proxy, on ``socket_path``."""

    def __init__(
        self,
        agent_id: str,
        socket_path: Path,
        allow: list[str],
        exceptions: LoopbackExceptions,
        resolve: Resolve = system_resolve,
        open_connection: OpenConnection = system_open,
        own_addresses: OwnAddresses = host_addresses,
        ask: AskEgress | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.ask = ask
        self.socket_path = socket_path
        self.allow = allow
        self.exceptions = exceptions
        self.resolve = resolve
        self.open_connection = open_connection
        self.own_addresses = own_addresses
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.log = get_logger()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=HEAD_LIMIT
        )
        os.chmod(self.socket_path, 0o666)  # the agent runs as an unprivileged uid

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.slots.locked():
                await _answer(writer, 503, "too many connections")
                return
            async with self.slots:
                await self._proxy(reader, writer)
        except Exception as exc:  # one connection's trouble is its own
            self.log.warning("egress_failed", agentId=self.agent_id, error=repr(exc)[:200])
        finally:
            writer.close()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            await _answer(writer, 400, "send a proxy request head")
            return
        try:
            request = parse_proxy_request(head)
            if not egress_allowed(request.target, self.allow):
                where = f"{request.target.host}:{request.target.port}"
                if self.ask is None:
                    raise Refused(f"{where} is not on the list")
                why = await self.ask(request.target.host, request.target.port)
                if why is not None:
                    raise Refused(f"{where}: {why}")
            addresses = await checked_addresses(
                request.target, self.resolve, self.exceptions, self.own_addresses()
            )
        except (BadRequest, Refused) as exc:
            self.log.warning("egress_refused", agentId=self.agent_id, error=str(exc)[:200])
            await _answer(writer, 400 if isinstance(exc, BadRequest) else 403, str(exc))
            return
        target = request.target
        try:
            up_reader, up_writer = await asyncio.wait_for(
                self.open_connection(addresses[0], target.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"cannot connect to {target.host}:{target.port} ({exc})")
            return
        self.log.info(
            "egress", agentId=self.agent_id, host=target.host, port=target.port, kind=request.method
        )
        try:
            if request.method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(request.head)
            await _splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, why: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Busy"}[status]
    body = f"clawpen egress: {why}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until the upstream side ends (or either is idle too long)."""

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await asyncio.wait_for(source.read(64 * 1024), IDLE_TIMEOUT):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()

    outward = asyncio.create_task(pump(reader, up_writer))
    try:
        await pump(up_reader, writer)
    finally:
        outward.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await outward
