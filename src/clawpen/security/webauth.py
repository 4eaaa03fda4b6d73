"""Who may use the orchestrator's HTTP ports (the dashboard, the metrics port): pure checks.

One random token, kept in ``data_dir/http.token`` (0600, made at the first start), opens both.
`clawpen dashboard` prints it, in a link; the page trades it for an HttpOnly, SameSite=Strict
cookie. A script or a Prometheus scraper sends it as ``Authorization: Bearer TOKEN``.

Reading is allowed with either. Acting (pair, stop an agent, pause a job) with the cookie also
needs the CSRF header, whose value only a page that could already read the dashboard's answers
knows: another site can make the browser send the cookie, never the header.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

TOKEN_FILE = "http.token"
COOKIE = "clawpen_dashboard"
CSRF_HEADER = "X-Clawpen-CSRF"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

Credential = Literal["bearer", "cookie"]


def load_token(data_dir: Path) -> str:
    """The token, made on first use: random, owner-only, the same across restarts (a
    bookmarked link and a scraper's credentials file keep working)."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    token = path.read_text().strip()
    if len(token) < 16:
        raise ValueError(f"{path} holds no usable token; delete it and restart to make one")
    return token


def csrf_for(token: str) -> str:
    """The value the page must echo in ``X-Clawpen-CSRF``: derived, so nothing more to store."""
    return hmac.new(token.encode(), b"clawpen-dashboard-csrf", hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def credential(
    token: str, headers: Mapping[str, str], cookies: Mapping[str, str]
) -> Credential | None:
    """How the request proves it holds the token, if it does."""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and _same(value.strip(), token):
        return "bearer"
    if _same(cookies.get(COOKIE), token):
        return "cookie"
    return None


def may_act(token: str, how: Credential | None, headers: Mapping[str, str]) -> bool:
    """A change is allowed with the bearer token, or with the cookie plus the CSRF header from
    a page of this very origin."""
    if how == "bearer":
        return True
    if how != "cookie" or not _same(headers.get(CSRF_HEADER), csrf_for(token)):
        return False
    origin, host = headers.get("Origin"), headers.get("Host", "")
    return origin is None or origin.split("://", 1)[-1] == host


def host_allowed(host_header: str, bind_host: str) -> bool:
    """On loopback, only loopback names: a web page on another name that resolves to 127.0.0.1
    (DNS rebinding) must not be able to talk to the dashboard as if it were on the page's own
    origin. Bound elsewhere, the operator chose the names; the token guards it."""
    if bind_host not in LOOPBACK_NAMES:
        return True
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return name in LOOPBACK_NAMES
