"""Remote MCP servers for an agent, reached by the orchestrator (the container has no network).

An agent's ``mcp_servers`` entry with a ``url`` is spoken to here, over MCP's streamable HTTP
(the official ``mcp`` SDK), with the entry's ``headers`` added here: the credential stays on
the host and never enters the container. The agent sees the server's tools through its door
(``GET /v1/mcp/tools``, ``POST /v1/mcp/call``) as ``SERVER__tool``. Every call goes through one
method, ``call_remote_tool``: the place a check before acting (the approvals of issue 18) hooks
in. A server that does not answer costs the call, named, never the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from clawpen_agent.protocol import MCP_SEPARATOR, McpCall

from ..config import McpServerSettings, Settings
from ..door.server import ToolRefused
from ..obs.logging import get_logger
from .api import NO_GATE, Gate

if TYPE_CHECKING:
    from mcp import Client

CALL_TIMEOUT = 60.0  # seconds for one tool call, connect to answer
LIST_TIMEOUT = 20.0  # seconds to list a server's tools
MAX_RESULT_CHARS = 100_000  # of one tool's answer, for the model


class AgentMcp:
    def __init__(self, settings: Settings, gate: Gate = NO_GATE) -> None:
        self.settings = settings
        self.gate = gate  # approvals.ask: [mcp]: each remote call waits for a person's tap
        self.log = get_logger()

    def _remote(self, agent_id: str) -> dict[str, McpServerSettings]:
        servers = self.settings.agent(agent_id).mcp_servers
        return {server.name: server for server in servers if server.remote}

    async def tools(self, agent_id: str) -> list[dict[str, Any]]:
        """Every tool of the agent's remote servers, named ``SERVER__tool``, the servers asked
        at once; one that cannot be listed is left out (and logged), the others are not."""
        listed = await asyncio.gather(
            *(self._tools_of(agent_id, server) for server in self._remote(agent_id).values())
        )
        return [tool for tools in listed for tool in tools]

    async def _tools_of(self, agent_id: str, server: McpServerSettings) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(LIST_TIMEOUT), _connected(server) as client:
                listed = await client.list_tools()
        except Exception as exc:  # any failure of a remote server is that server's
            self.log.warning(
                "mcp_server_unavailable", agentId=agent_id, server=server.name, error=_why(exc)
            )
            return []
        return [
            {
                "name": f"{server.name}{MCP_SEPARATOR}{tool.name}",
                "description": (tool.description or "")[:1024],
                "input_schema": tool.input_schema or {"type": "object"},
            }
            for tool in listed.tools
        ]

    async def call(
        self, agent_id: str, call: McpCall, task_id: int | None = None
    ) -> dict[str, Any]:
        server = self._remote(agent_id).get(call.server)
        if server is None:
            raise ToolRefused(404, f"no remote MCP server {call.server!r} is configured for you")
        return await self.call_remote_tool(agent_id, server, call.tool, call.arguments, task_id)

    async def call_remote_tool(
        self,
        agent_id: str,
        server: McpServerSettings,
        tool: str,
        arguments: dict[str, Any],
        task_id: int | None = None,
    ) -> dict[str, Any]:
        """The one way a remote MCP tool is called for an agent; with ``mcp`` in the agent's
        ``approvals.ask``, only once a person allowed this exact call."""
        if self.gate.asks(agent_id, "mcp"):
            args = {"server": server.name, "tool": tool, "arguments": arguments}
            shown = json.dumps(arguments, ensure_ascii=False)
            preview = shown if len(shown) <= 300 else shown[:300] + "..."
            verdict = await self.gate.request(
                agent_id, "mcp", args, f"call {server.name}__{tool} with {preview}", task_id
            )
            if not verdict.approved:
                raise ToolRefused(403, f"{server.name}__{tool} {verdict}; not called")
            if not verdict.first:  # a re-run of the task: the call was made the first time
                raise ToolRefused(
                    409, f"{server.name}__{tool} was called once already under its approval"
                )
        try:
            async with asyncio.timeout(CALL_TIMEOUT), _connected(server) as client:
                result = await client.call_tool(tool, arguments)
        except Exception as exc:  # the server's failure, told to the model
            error = _why(exc)
            self.log.warning(
                "mcp_call_failed", agentId=agent_id, server=server.name, tool=tool, error=error
            )
            raise ToolRefused(502, f"the MCP server {server.name} failed: {error}") from None
        parts = [getattr(block, "text", None) for block in result.content]
        text = "\n".join(part for part in parts if isinstance(part, str))
        if not text and result.structured_content is not None:
            text = str(result.structured_content)
        self.log.info(
            "mcp_call", agentId=agent_id, server=server.name, tool=tool, error=result.is_error
        )
        return {"text": text[:MAX_RESULT_CHARS], "is_error": bool(result.is_error)}


@contextlib.asynccontextmanager
async def _connected(server: McpServerSettings) -> AsyncIterator[Client]:
    """A session with the server over streamable HTTP, its headers added here."""
    from mcp import Client  # the SDK is imported only when an agent uses a remote server
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    assert server.url is not None
    http = create_mcp_http_client(headers=dict(server.headers))
    async with http, Client(streamable_http_client(server.url, http_client=http)) as client:
        yield client


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _why(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:300]
