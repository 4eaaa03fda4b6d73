"""The CLI's way into a running orchestrator: one HTTP request over its admin socket
(``data_dir/admin.sock``, owner-only), JSON both ways.

Commands are synchronous; each request runs its own short event loop (``asyncio.run``) at
this edge, and aiohttp's failures become ``OrchestratorUnavailable`` right here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ..config import data_dir_of
from ..errors import ClawpenError, OrchestratorUnavailable
from .common import guard


def admin(config: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``path`` goes out as written (already quoted); an answer of 400 or more becomes a
    ``ClawpenError`` carrying the orchestrator's own ``error`` line."""
    # Imported here, as aiohttp is below: the admin server's module brings the core with it,
    # and commands that never reach the orchestrator (check, init, secrets, logs) start faster.
    from ..ops.admin import ADMIN_SOCKET

    socket = data_dir_of(config) / ADMIN_SOCKET
    unavailable = OrchestratorUnavailable(
        f"no orchestrator answers at {socket}", f"start it: clawpen run --config {config}"
    )
    if not socket.exists():
        raise unavailable
    status, text = asyncio.run(_request(socket, method, path, body, unavailable))
    data = json.loads(text)
    if status >= 400:
        raise ClawpenError(data.get("error", text), "")
    return data


async def _request(
    socket: Path,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    unavailable: OrchestratorUnavailable,
) -> tuple[int, str]:
    import aiohttp  # a fifth of a second to import: only for commands that use it
    from yarl import URL

    url = URL(f"http://clawpen{path}", encoded=True)
    connector = aiohttp.UnixConnector(path=str(socket))
    timeout = aiohttp.ClientTimeout()  # none: a chat reply takes as long as the agent takes
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.request(method, url, json=body) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
        # nobody listens on the socket, or the orchestrator went away mid-answer
        raise unavailable from None


def call(config: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``admin`` for a command: a failure is one line on stderr and the error's exit code."""
    return guard(lambda: admin(config, method, path, body))
