"""Fetch a URL for an agent, which has no network of its own, without letting it reach inward.

Each hop of a fetch (the URL, then every redirect) is checked before any connection: the URL by
``netpolicy.parse_target`` (scheme, credentials, numeric hosts, localhost), the domain by the
agent's allowlist, then every address the name resolves to by ``netpolicy.check_address``
(public, and none of the host's own, ``hostaddrs.py``); the connection goes to the address
that was checked, never to the name, so a second DNS answer cannot differ from the first
(rebinding). The body is read up to ``max_bytes``, and HTML becomes text (``htmltext.py``).

``timeout`` holds for the whole fetch, redirects included, from the first byte to the last: the
exchange runs on the event loop (``webhttp.py``), so a server that dribbles its answer is cut
off at the deadline and its connection closed; no thread waits on it. Name lookups, which only
a thread can do, run in a small pool of their own (``DNS_THREADS``), never in the loop's
default one that other work shares.

The seams, ``resolve`` (name -> addresses), ``connect`` (address -> streams) and
``own_addresses`` are arguments: the tests record through them that a refused target is never
connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin

from ..threads import run_in
from . import webhttp
from .hostaddrs import host_addresses
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
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# (address, port, TLS context or None for http, the name for SNI and the certificate check)
Connect = Callable[[IPAddress, int, ssl.SSLContext | None, str], Awaitable[Streams]]
OwnAddresses = Callable[[], frozenset[IPAddress]]
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


# getaddrinfo blocks and cannot be cancelled, and a name's own DNS server decides how long it
# takes (up to the resolver's timeouts): lookups for agents wait here, not in the pool that
# Docker calls or the door's parsing use. Threads start only when needed.
DNS_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="clawpen-dns")


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (the policy refuses the lot if any is inward)."""
    try:
        infos = await run_in(DNS_THREADS, socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )


async def system_connect(
    ip: IPAddress, port: int, tls: ssl.SSLContext | None, server_name: str
) -> Streams:
    """Streams to ``ip`` (no name lookup: the socket is connected to the checked address)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (str(ip), port))
        return await asyncio.open_connection(
            sock=sock,
            ssl=tls,
            server_hostname=server_name if tls is not None else None,
            limit=webhttp.MAX_LINE,
        )
    except BaseException:
        sock.close()
        raise


async def checked_addresses(
    target: Target,
    resolve: Resolve,
    exceptions: LoopbackExceptions,
    own: frozenset[IPAddress],
) -> list[IPAddress]:
    """The addresses to connect to for ``target``, each one checked; ``Refused`` if any is not
    allowed (a name with one inward address among public ones is suspect as a whole). ``own``:
    the host's addresses, which are refused too."""
    addresses = [target.ip] if target.ip is not None else await resolve(target.host, target.port)
    if not addresses:
        raise Refused(f"{target.host} has no address")
    for ip in addresses:
        check_address(ip, target.port, exceptions, own)
    return addresses


class WebFetcher:
    def __init__(
        self,
        exceptions: LoopbackExceptions = NO_EXCEPTIONS,
        resolve: Resolve = system_resolve,
        connect: Connect = system_connect,
        limits: FetchLimits = FetchLimits(),
        tls: ssl.SSLContext | None = None,
        own_addresses: OwnAddresses = host_addresses,
    ) -> None:
        self.exceptions = exceptions
        self.resolve = resolve
        self.connect = connect
        self.limits = limits
        self.tls = tls or ssl.create_default_context()
        self.own_addresses = own_addresses

    async def fetch(self, url: str, allow_domains: list[str] | None, max_chars: int) -> Page:
        """The page at ``url`` as text; ``Refused`` for a target the policy forbids,
        ``TimeoutError`` past the time limit, ``OSError`` for a network failure."""
        async with asyncio.timeout(self.limits.timeout):
            for _ in range(self.limits.max_redirects + 1):
                target = parse_target(url)
                if not _allowed(target, allow_domains):
                    raise Refused(f"refused: {target.host} is not on this agent's allow list")
                own = self.own_addresses()
                addresses = await checked_addresses(target, self.resolve, self.exceptions, own)
                response = await self._get(target, addresses[0])
                location = response.headers.get("location")
                if response.status in REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                content_type = response.headers.get_content_type()
                charset = response.headers.get_content_charset() or "utf-8"
                text = _as_text(response.body, content_type, charset)
                return Page(
                    url, response.status, content_type, text[:max_chars], response.truncated
                )
        raise Refused(f"refused: more than {self.limits.max_redirects} redirects")

    async def _get(self, target: Target, ip: IPAddress) -> webhttp.Response:
        """One GET to ``ip``; the connection is dropped at the end, or when the deadline
        cancels it (abort: no TLS goodbye a stalled server could make us wait for)."""
        tls = self.tls if target.scheme == "https" else None
        reader, writer = await self.connect(ip, target.port, tls, target.host)
        try:
            return await webhttp.get(
                reader,
                writer,
                target.path,
                {
                    "Host": target.host_header,
                    "User-Agent": USER_AGENT,
                    "Accept": "text/html, text/plain;q=0.9, */*;q=0.5",
                    "Accept-Encoding": "identity",
                    "Connection": "close",
                },
                self.limits.max_bytes,
            )
        finally:
            writer.transport.abort()


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
