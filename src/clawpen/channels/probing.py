"""What the platforms' doctor probes share: one HTTP request with a deadline, through aiohttp
(the one HTTP client library of our code), and the errors that mean nothing answered."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .. import netenv

TIMEOUT = 10.0  # seconds for a probe's whole request
UNREACHABLE = (aiohttp.ClientError, TimeoutError)  # no answer: the network, or a wrong URL


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(self.body)


async def request(method: str, url: str, headers: Mapping[str, str] | None = None) -> Answer:
    """One request and its whole answer; raises one of ``UNREACHABLE`` when nothing answered.
    The proxy and CA bundle are the adapters' own (``netenv``): a probe passes where the
    adapter would connect, and fails where it would not."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with (
        netenv.current().session(url, timeout=timeout) as session,
        session.request(method, url, headers=headers) as response,
    ):
        return Answer(response.status, await response.read())


def no_answer(platform: str, base: str, channel: str, exc: BaseException) -> tuple[str, str]:
    """The finding when nothing answered at ``base``: the network, or a wrong URL."""
    return (
        f"{platform} does not answer at {base} ({type(exc).__name__})",
        f"check the network, or channels.{channel}.api_base_url",
    )
