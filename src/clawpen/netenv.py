"""How this process reaches the internet: the proxy for each address, and the CA bundle.

Behind a corporate proxy (``HTTPS_PROXY``, ``NO_PROXY``) or with a private CA
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``), every outbound connection must follow the same settings:
each adapter's client library, the model client, and ``clawpen doctor``, which checks a channel
the way the channel connects. aiohttp (under PTB, discord.py, slack_sdk and our own clients)
ignores the proxy unless it is told; this module is what they are all told. The lower-case
names win over the upper-case ones, as in curl and urllib.
"""

from __future__ import annotations

import functools
import os
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ClawpenError

if TYPE_CHECKING:
    import aiohttp

# what an adapter process is given of our environment (channels/process.py): nothing else
NETWORK_ENV = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
SECURE_SCHEMES = frozenset({"https", "wss"})


class CABundleError(ClawpenError):
    """SSL_CERT_FILE or SSL_CERT_DIR names a bundle that cannot be read or is not one."""


@dataclass(frozen=True)
class NetEnv:
    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: str = ""
    ca_file: str | None = None
    ca_dir: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> NetEnv:
        env = os.environ if environ is None else environ

        def named(name: str) -> str | None:
            return env.get(name) or env.get(name.upper()) or None

        return cls(
            https_proxy=named("https_proxy"),
            http_proxy=named("http_proxy"),
            no_proxy=named("no_proxy") or "",
            ca_file=env.get("SSL_CERT_FILE") or None,
            ca_dir=env.get("SSL_CERT_DIR") or None,
        )

    def proxy_for(self, url: str) -> str | None:
        """The proxy a connection to ``url`` goes through, or None: direct (no proxy set for
        its scheme, or its host is in NO_PROXY)."""
        parts = urlsplit(url)
        proxy = self.https_proxy if parts.scheme in SECURE_SCHEMES else self.http_proxy
        if not proxy or not parts.hostname:
            return None
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if self.no_proxy and bypass(host, {"no": self.no_proxy}):
            return None
        return proxy

    def ssl_context(self) -> ssl.SSLContext:
        """The context every TLS connection verifies with: the bundle SSL_CERT_FILE and the
        directory SSL_CERT_DIR name when set (they replace the system's, as in OpenSSL), else
        the system's. Built once per process; an adapter builds it before dropping its
        privileges, so a bundle only root can read still counts."""
        return _context(self.ca_file, self.ca_dir)

    def fresh_ssl_context(self) -> ssl.SSLContext:
        """A context of its own from the same bundle, for a caller that changes it."""
        return _build(self.ca_file, self.ca_dir)

    def connector(self, **options: Any) -> aiohttp.TCPConnector:
        """An aiohttp connector that verifies with ``ssl_context``."""
        import aiohttp

        return aiohttp.TCPConnector(ssl=self.ssl_context(), **options)

    def session(self, url: str, **options: Any) -> aiohttp.ClientSession:
        """An aiohttp session for ``url``'s host: through its proxy, verifying with
        ``ssl_context``."""
        import aiohttp

        return aiohttp.ClientSession(
            connector=self.connector(), proxy=self.proxy_for(url), **options
        )

    def describe(self, url: str | None = None) -> str:
        """Which proxy (for ``url``, or in general) and which CA bundle, in words; a proxy's
        password is not shown."""
        proxy = self.proxy_for(url) if url is not None else (self.https_proxy or self.http_proxy)
        route = f"through proxy {_shown(proxy)}" if proxy else "direct (no proxy)"
        if url is None and proxy and self.no_proxy:
            route += f", except NO_PROXY {self.no_proxy}"
        return f"{route}; CA bundle: {self.ca_description()}"

    def ca_description(self) -> str:
        pairs = (("FILE", self.ca_file), ("DIR", self.ca_dir))
        given = [f"{value} (SSL_CERT_{name})" for name, value in pairs if value]
        if given:
            return ", ".join(given)
        paths = ssl.get_default_verify_paths()
        return f"the system's ({paths.cafile or paths.capath or 'OpenSSL default'})"


def current() -> NetEnv:
    """This process's settings, read from its environment now."""
    return NetEnv.from_environ()


def _build(ca_file: str | None, ca_dir: str | None) -> ssl.SSLContext:
    if not ca_file and not ca_dir:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file, capath=ca_dir)
    except (OSError, ssl.SSLError) as exc:
        name = "SSL_CERT_FILE" if ca_file else "SSL_CERT_DIR"
        raise CABundleError(
            f"{name}={ca_file or ca_dir} cannot be used as a CA bundle ({exc})",
            f"point {name} at a readable PEM file of CA certificates, or unset it",
        ) from exc


_context = functools.cache(_build)


def _shown(proxy: str) -> str:
    parts = urlsplit(proxy)
    if parts.password is None:
        return proxy
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
