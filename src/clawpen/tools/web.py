"""What an agent may fetch from the web, through its socket (the ``web_fetch`` tool).

Off unless the agent's ``web_fetch.enabled``; only the domains of its ``allow_domains`` when
that is set; never an inward address (``netpolicy.py``, checked by ``webfetch.py`` at every
hop). An agent has ``CONCURRENT`` fetches in flight at most, and ``PER_MINUTE`` a minute.
Every fetch is logged (``web_fetch`` or ``web_fetch_refused``, with the URL's host).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from clawpen_agent.protocol import FetchRequest

from ..config import Settings
from ..door.server import ToolRefused
from ..egress.netpolicy import Refused
from ..egress.webfetch import WebFetcher
from ..obs.logging import get_logger
from ..ratelimit import KeyedBuckets
from .api import NO_GATE, Gate

CONCURRENT = 2
PER_MINUTE = 30


class AgentWeb:
    def __init__(
        self,
        settings: Settings,
        fetcher: WebFetcher,
        clock: Callable[[], float] = time.monotonic,
        gate: Gate = NO_GATE,
    ) -> None:
        self.gate = gate
        self.settings = settings
        self.fetcher = fetcher
        self.clock = clock
        self.rate: KeyedBuckets[str] = KeyedBuckets(PER_MINUTE / 60, PER_MINUTE / 2)
        self.slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(CONCURRENT)
        )
        self.log = get_logger()

    async def fetch(self, agent_id: str, request: FetchRequest) -> dict[str, Any]:
        config = self.settings.agent(agent_id).web_fetch
        if not config.enabled:
            raise ToolRefused(
                403, "web_fetch is not enabled for you (the operator sets agents[].web_fetch)"
            )
        if not self.rate.allow(agent_id, self.clock()):
            raise ToolRefused(429, f"at most {PER_MINUTE} fetches a minute; wait a little")
        host = urlsplit(request.url).hostname or "?"
        verdict = None
        if self.gate.asks(agent_id, "web_fetch"):
            url = canonical_url(request.url)
            verdict = await self.gate.request(agent_id, "web_fetch", {"url": url}, f"fetch {url}")
            if not verdict.approved:
                self.log.info("web_fetch_refused", agentId=agent_id, host=host, error=str(verdict))
                raise ToolRefused(403, f"web_fetch {verdict}; not fetched")
            request = replace(request, url=url)  # what was shown is what is fetched
        async with self.slots[agent_id]:
            try:
                page = await self.fetcher.fetch(
                    request.url, config.allow_domains, request.max_chars
                )
            except Refused as exc:
                self.log.warning("web_fetch_refused", agentId=agent_id, host=host, error=str(exc))
                raise ToolRefused(403, str(exc)) from None
            except TimeoutError:
                self.log.warning("web_fetch_failed", agentId=agent_id, host=host, error="timeout")
                raise ToolRefused(504, "the fetch took too long") from None
            except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                self.log.warning("web_fetch_failed", agentId=agent_id, host=host, error=error)
                raise ToolRefused(502, f"the fetch failed ({error})") from None
        self.log.info("web_fetch", agentId=agent_id, host=host, status=page.status)
        return {
            **({"approval": str(verdict)} if verdict is not None else {}),
            "url": page.url,
            "status": page.status,
            "content_type": page.content_type,
            "truncated": page.truncated,
            "text": page.text,
        }


def canonical_url(url: str) -> str:
    """One spelling of a URL, so that a card names what is fetched and the same page asks
    once: scheme and host in lower case, the default port dropped, no fragment, "/" for an
    empty path. A URL that cannot be read is returned as it is (the fetch refuses it).

    >>> canonical_url("HTTPS://Example.COM:443/a?b=1#top")
    'https://example.com/a?b=1'
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        return url  # credentials in a URL: refused by the fetch, never re-spelled here
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
