"""Fetch a URL for an agent, which has no network of its own, without letting it reach inward.

Each hop of a fetch (the URL, then every redirect) is checked before any connection: the URL by
``netpolicy.parse_target`` (scheme, credentials, numeric hosts, localhost), the domain by the
agent's allowlist, then every address the name resolves to by ``netpolicy.check_address``; the
connection goes to the address that was checked, never to the name, so a second DNS answer
cannot differ from the first (rebinding). The body is read up to ``max_bytes``, the whole
fetch within ``timeout`` seconds, and HTML becomes text (``htmltext.py``).

The two seams, ``resolve`` (name -> addresses) and ``connect`` (address -> socket), are
arguments: the tests record through them that a refused target is never connected to.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urljoin

from .htmltext import html_to_text
from .netpolicy import (
    NO_EXCEPTIONS,
    IPAddress,
    LoopbackExceptions,
    Refused,
    Target,
    check_address,
    domain_allowed,
    parse_target,
)

Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]
Connect = Callable[[IPAddress, int, float], socket.socket]  # blocking; runs in a thread
MiB = 1024 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
USER_AGENT = "clawpen-web-fetch/1 (+https://github.com/clawpen)"


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 2 * MiB  # of the body as sent (no compression is asked for)
    timeout: float = 20.0  # seconds for the whole fetch, redirects included
    max_redirects: int = 5


@dataclass(frozen=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    text: str
    truncated: bool  # the body was longer than max_bytes


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (the policy refuses the lot if any is inward)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )


def system_connect(ip: IPAddress, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((str(ip), port), timeout=timeout)


async def checked_addresses(
    target: Target, resolve: Resolve, exceptions: LoopbackExceptions
) -> list[IPAddress]:
    """The addresses to connect to for ``target``, each one checked; ``Refused`` if any is not
    allowed (a name with one inward address among public ones is suspect as a whole)."""
    addresses = [target.ip] if target.ip is not None else await resolve(target.host, target.port)
    if not addresses:
        raise Refused(f"{target.host} has no address")
    for ip in addresses:
        check_address(ip, target.port, exceptions)
    return addresses


class WebFetcher:
    def __init__(
        self,
        exceptions: LoopbackExceptions = NO_EXCEPTIONS,
        resolve: Resolve = system_resolve,
        connect: Connect = system_connect,
        limits: FetchLimits = FetchLimits(),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.exceptions = exceptions
        self.resolve = resolve
        self.connect = connect
        self.limits = limits
        self.tls = tls or ssl.create_default_context()

    async def fetch(self, url: str, allow_domains: list[str] | None, max_chars: int) -> Page:
        """The page at ``url`` as text; ``Refused`` for a target the policy forbids,
        ``TimeoutError`` past the time limit, ``OSError`` for a network failure."""
        deadline = time.monotonic() + self.limits.timeout
        async with asyncio.timeout(self.limits.timeout):
            for _ in range(self.limits.max_redirects + 1):
                target = parse_target(url)
                if not _allowed(target, allow_domains):
                    raise Refused(f"refused: {target.host} is not on this agent's allow list")
                addresses = await checked_addresses(target, self.resolve, self.exceptions)
                status, headers, body, truncated = await asyncio.to_thread(
                    self._get, target, addresses[0], deadline
                )
                location = headers.get("location")
                if status in REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                content_type = headers.get_content_type()
                text = _as_text(body, content_type, headers.get_content_charset() or "utf-8")
                return Page(url, status, content_type, text[:max_chars], truncated)
        raise Refused(f"refused: more than {self.limits.max_redirects} redirects")

    def _get(
        self, target: Target, ip: IPAddress, deadline: float
    ) -> tuple[int, Message, bytes, bool]:
        """One GET to ``ip`` (blocking, in a thread): status, headers, body, truncated."""
        sock = self.connect(ip, target.port, _left(deadline))
        try:
            if target.scheme == "https":
                sock = self.tls.wrap_socket(sock, server_hostname=target.host)
            conn = http.client.HTTPConnection(target.host, target.port, timeout=_left(deadline))
            conn.sock = sock  # connected already, to the checked address: no second lookup
            conn.request(
                "GET",
                target.path,
                headers={
                    "Host": target.host_header,
                    "User-Agent": USER_AGENT,
                    "Accept": "text/html, text/plain;q=0.9, */*;q=0.5",
                    "Accept-Encoding": "identity",
                    "Connection": "close",
                },
            )
            response = conn.getresponse()
            body = bytearray()
            while len(body) <= self.limits.max_bytes:
                sock.settimeout(_left(deadline))
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                body += chunk
            truncated = len(body) > self.limits.max_bytes
            return response.status, response.msg, bytes(body[: self.limits.max_bytes]), truncated
        finally:
            sock.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch took too long")
    return left


def _allowed(target: Target, allow: list[str] | None) -> bool:
    if allow is None:
        return True
    if target.ip is not None:
        return str(target.ip) in allow
    return domain_allowed(target.host, allow)


def _as_text(body: bytes, content_type: str, charset: str) -> str:
    """Text for the model; ``Refused`` for a binary type it could not read anyway."""
    try:
        decoded = body.decode(charset, errors="replace")
    except LookupError:
        decoded = body.decode("utf-8", errors="replace")
    if content_type in ("text/html", "application/xhtml+xml"):
        return html_to_text(decoded)
    if content_type.startswith(TEXT_TYPES) or content_type.endswith(("+json", "+xml")):
        return decoded
    raise Refused(f"{content_type} is not text; web_fetch reads text and HTML only")
