"""Small MCP servers written with the official ``mcp`` SDK, for the tests.

``STDIO_SERVER`` is the source of a stdio server (run as ``python3 -c STDIO_SERVER``, inside an
agent's container in the integration tests); ``RemoteMcp`` serves MCP's streamable HTTP on
loopback and refuses any request without the expected ``Authorization`` header, keeping every
header it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

STDIO_SERVER = '''
import os, socket
from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")

@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b

@server.tool()
def where() -> str:
    """Say where this server runs: its uid and whether it can reach the network."""
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        network = "reachable"
    except OSError as exc:
        network = f"unreachable ({type(exc).__name__})"
    return f"uid={os.getuid()} network={network}"

server.run()
'''


@dataclass
class RemoteMcp:
    token: str
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _server: Any = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        import uvicorn
        from mcp.server.mcpserver import MCPServer

        mcp = MCPServer("weather")
        calls = self.calls

        @mcp.tool()
        def forecast(city: str) -> str:
            """Tomorrow's weather in a city."""
            calls.append(("forecast", {"city": city}))
            return f"Sunny in {city}, 21 C"

        inner = mcp.streamable_http_app(stateless_http=True, json_response=True)
        expected = f"Bearer {self.token}".encode()
        seen = self.headers_seen

        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                seen.append(headers)
                if headers.get("authorization", "").encode() != expected:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await inner(scope, receive, send)

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(guarded, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[listener]))
        while not self._server.started:
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self.url

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
