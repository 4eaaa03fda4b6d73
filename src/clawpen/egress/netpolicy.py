"""Pure: where the orchestrator may connect on an agent's behalf (web_fetch, egress).

An agent is untrusted, and the orchestrator sits on the host's network: anything it fetches
for an agent must go to the public internet only, never to the host itself, the LAN, the
cloud's metadata service or another agent's services. The checks run on the *addresses*, after
DNS resolution, and the caller connects to the address that was checked (never resolving the
name again), so a name that resolves to a public address once and a private one next time (DNS
rebinding) cannot slip through. Each redirect is checked again as a new target.

    >>> address_problem(ipaddress.ip_address("93.184.215.14"))
    >>> address_problem(ipaddress.ip_address("169.254.169.254"))
    'the cloud metadata address 169.254.169.254'

``LoopbackExceptions`` is for tests only: it lets exactly the listed ``127.0.0.1:PORT`` pairs
through, so that a fetch from a local test server can be shown to work. It cannot be set from
``clawpen.yaml`` (``config.load_settings`` refuses the key); only code that builds ``Settings``
itself, as the tests do, can pass it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class Refused(Exception):
    """A target the policy will not connect to; the message says why, in one line."""


@dataclass(frozen=True)
class LoopbackExceptions:
    """Test-only: ``127.0.0.1:PORT`` pairs that may be reached despite being loopback."""

    allowed: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: list[str]) -> LoopbackExceptions:
        pairs = set()
        for entry in entries:
            host, _, port = entry.rpartition(":")
            if host != "127.0.0.1" or not port.isdigit():
                raise ValueError(f"{entry!r}: only 127.0.0.1:PORT can be allowed for tests")
            pairs.add((host, int(port)))
        return cls(frozenset(pairs))

    def allows(self, ip: IPAddress, port: int) -> bool:
        return (str(ip), port) in self.allowed


NO_EXCEPTIONS = LoopbackExceptions()


def address_problem(ip: IPAddress) -> str | None:
    """Why the orchestrator must not connect to ``ip`` for an agent, or None for a public one."""
    if ip in METADATA:
        return f"the cloud metadata address {ip}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"an IPv4-mapped IPv6 address {ip}"
        if ip.sixtofour is not None or ip.teredo is not None or ip in NAT64:
            return f"an IPv6 address that embeds an IPv4 one {ip}"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address {ip}"
    return None


def check_address(
    ip: IPAddress,
    port: int,
    exceptions: LoopbackExceptions = NO_EXCEPTIONS,
    own: frozenset[IPAddress] = frozenset(),
) -> None:
    """Raise ``Refused`` unless ``ip`` is public and not one of ``own``, the host's own
    addresses (``hostaddrs.host_addresses``): a public address on the host's eth0 reaches every
    service bound to 0.0.0.0. A test's allowed loopback port passes."""
    if exceptions.allows(ip, port):
        return
    problem = address_problem(ip)
    if problem is None and ip in own:
        problem = f"{ip} is an address of this host"
    if problem is not None:
        raise Refused(f"refused: {problem}")


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, IDN as its ASCII (punycode) form; ``Refused`` for what is
    not a host name. ``normalize_host("Bücher.Example.") == "xn--bcher-kva.example"``"""
    host = host.strip().rstrip(".").lower()
    if not host:
        raise Refused("refused: the URL has no host")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise Refused("refused: the host is not a valid domain name") from None
    if not all(_HOST_LABEL.fullmatch(label) for label in ascii_host.split(".")):
        raise Refused("refused: the host is not a valid domain name")
    return ascii_host


def literal_ip(host: str) -> IPAddress | None:
    """The address a host written as a number stands for, in every form a C resolver takes:
    ``127.0.0.1``, ``[::1]``, ``2130706433``, ``0177.0.0.1``, ``0x7f.1``. Such a host is
    checked as that address (so none of them can reach loopback by looking like a name)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass  # a name made of hex letters ("face.be")
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to call it (TLS SNI, the Host header)."""

    scheme: str  # http | https
    host: str  # normalized name, or the address as text
    port: int
    path: str  # path and query, at least "/"
    ip: IPAddress | None  # set when the host was an address

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def parse_target(url: str) -> Target:
    """Pure: a URL -> its ``Target``, or ``Refused`` for what may not be fetched at all."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise Refused(f"refused: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused("refused: only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise Refused("refused: URLs with credentials (user:pass@) are not fetched")
    raw_host = parts.hostname or ""
    ip = literal_ip(raw_host)
    host = str(ip) if ip is not None else normalize_host(raw_host)
    if ip is None and (host == "localhost" or host.endswith(".localhost")):
        raise Refused("refused: localhost")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path, ip)


def domain_allowed(host: str, allow: list[str] | None) -> bool:
    """``allow`` None: any host. Otherwise the host is a listed domain or a subdomain of one:
    ``domain_allowed("docs.python.org", ["python.org"])`` is True, ``"evilpython.org"`` not."""
    if allow is None:
        return True
    for entry in allow:
        domain = normalize_host(entry)
        if host == domain or host.endswith("." + domain):
            return True
    return False
