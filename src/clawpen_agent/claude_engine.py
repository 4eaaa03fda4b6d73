"""The ``claude-code`` engine: a task answered by the Claude Agent SDK instead of ``loop.py``.

Runs only in the image variant that carries the SDK (``/opt/clawpen/engine``, see
``image/claude-code.Dockerfile``), which sets ``CLAWPEN_ENGINE=claude-code``. The container has
no network: the SDK's bundled CLI is pointed at ``127.0.0.1:MODEL_PORT``, a loopback forwarder
(``forwarder.start``) to the agent socket, whose ``/v1/messages`` is the orchestrator's model
proxy. The key the CLI holds is a dummy; the proxy replaces it with the real one outside.

One SDK session per conversation: its id is kept under ``/workspace/.clawpen/claude-sessions``
(with the orchestrator's session number, so ``/new`` starts afresh) and the CLI's own
transcripts live in ``$HOME/.claude`` (``HOME=/workspace``), so a restart resumes it.

clawpen's own tools (memory, send_message, send_file, web_fetch, the jobs) reach the CLI as
the in-process MCP server ``clawpen`` (the CLI names them ``mcp__clawpen__NAME``): the light
engine's schemas (``tools.TOOL_SCHEMAS``) and implementations (``tools.run_tool``: memory in
/workspace, the others through the socket routes ``/v1/outbox``, ``/v1/files``,
``/v1/web/fetch``, ``/v1/jobs``). The operator's MCP servers (``Task.mcp_servers``) reach it
the CLI's way, as ``mcp__NAME__tool``: stdio ones configured for the CLI to run here, remote
ones as in-process servers of the same names whose tools call through the socket.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .durable import read_json, write_json
from .inbox import save_files
from .loop import system_prompt, user_turn
from .protocol import SOCKET_PATH, Task, TaskResult
from .tools import TOOL_SCHEMAS, Api, run_tool

ENGINE = "claude-code"
MODEL_PORT = 3129  # the loopback port of the model forwarder (egress has 3128)
DUMMY_KEY = "sk-ant-clawpen-dummy"  # the proxy drops it and adds the real key
# The CLI's tools, minus the ones that would reach the network (the container has none anyway)
ALLOWED_TOOLS = ["Bash", "Read", "Write", "Edit", "Glob", "Grep", "LS", "TodoWrite"]
MCP_SERVER = "clawpen"
# clawpen's tools the CLI lacks (its own Bash and file tools stand in for the rest)
MCP_TOOLS = (
    "memory_get",
    "memory_set",
    "memory_delete",
    "memory_list",
    "send_message",
    "send_file",
    "web_fetch",
    "schedule_job",
    "list_jobs",
    "cancel_job",
)


def mcp_name(name: str) -> str:
    """What the CLI calls a tool of clawpen's MCP server."""
    return f"mcp__{MCP_SERVER}__{name}"


@dataclass(frozen=True)
class ClawpenTool:
    """One of clawpen's tools as the MCP server offers it; ``run`` answers (text, is_error)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    run: Callable[[dict[str, Any]], tuple[str, bool]]


def clawpen_tools(root: str, api: Api | None) -> list[ClawpenTool]:
    """The MCP server's tools, with the light engine's schemas and implementations. Their
    socket calls share one connection, so they take turns (the CLI may run tools at once)."""
    lock = threading.Lock()

    def one_at_a_time(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        assert api is not None
        with lock:
            return api(method, path, body)

    schemas = {schema["name"]: schema for schema in TOOL_SCHEMAS}

    def tool(name: str) -> ClawpenTool:
        def run(args: dict[str, Any]) -> tuple[str, bool]:
            return run_tool(name, args, root, one_at_a_time if api else None)

        schema = schemas[name]
        return ClawpenTool(name, schema["description"], schema["input_schema"], run)

    return [tool(name) for name in MCP_TOOLS]


def mcp_server(tools: list[ClawpenTool], name: str = MCP_SERVER) -> Any:
    """The in-process SDK MCP server ``clawpen``; a tool runs in a thread, as it blocks on
    the socket or the disk while the SDK's loop keeps talking to the CLI."""
    from claude_agent_sdk import create_sdk_mcp_server, tool  # only in the engine's image

    def wrapped(spec: ClawpenTool) -> Any:
        async def handler(args: dict[str, Any]) -> dict[str, Any]:
            text, is_error = await asyncio.to_thread(spec.run, args)
            return {"content": [{"type": "text", "text": text}], "is_error": is_error}

        return tool(spec.name, spec.description, spec.input_schema)(handler)

    return create_sdk_mcp_server(name, tools=[wrapped(spec) for spec in tools])


def stdio_servers(task: Task) -> dict[str, dict[str, Any]]:
    """The task's stdio MCP servers as the CLI configures them itself (it runs them here, in
    the container, and names their tools ``mcp__NAME__tool``)."""
    servers = {}
    for spec in task.mcp_servers:
        command = [str(part) for part in spec.get("command") or ()]
        if spec.get("remote") or not command:
            continue
        servers[str(spec["name"])] = {
            "type": "stdio",
            "command": command[0],
            "args": command[1:],
            "env": {str(k): str(v) for k, v in (spec.get("env") or {}).items()},
        }
    return servers


def remote_servers(task: Task, api: Api | None, root: str) -> dict[str, Any]:
    """The task's remote MCP servers as in-process SDK servers of the same names, each tool
    a call through the socket (the orchestrator holds the credentials)."""
    remote = [spec for spec in task.mcp_servers if spec.get("remote")]
    if not remote or api is None:
        return {}
    from .mcp import McpTools

    tools = McpTools(remote, api, root)
    grouped: dict[str, list[ClawpenTool]] = {}
    for schema in tools.schemas:
        server, _, name = str(schema["name"]).partition("__")
        grouped.setdefault(server, []).append(
            ClawpenTool(
                name,
                str(schema.get("description") or ""),
                schema.get("input_schema") or {"type": "object"},
                functools.partial(tools.run, str(schema["name"])),
            )
        )
    return {server: mcp_server(specs, server) for server, specs in grouped.items()}


def cli_environment(model: str, port: int = MODEL_PORT) -> dict[str, str]:
    """What the CLI needs to speak to the proxy and nothing else: no telemetry, no updates,
    every model it might pick for small chores set to the agent's own (the proxy allows only
    that one), and the experimental betas off (the proxy would drop them)."""
    return {
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ANTHROPIC_API_KEY": DUMMY_KEY,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }


def start_forwarder(socket_path: str = SOCKET_PATH, port: int = MODEL_PORT) -> None:
    """Loopback TCP -> the agent socket, for the CLI's model traffic."""
    from . import forwarder

    forwarder.start(socket_path, port=port)


class SessionIds:
    """The SDK's session id per conversation, with the orchestrator's session number."""

    def __init__(self, root: str) -> None:
        self.dir = Path(root) / ".clawpen" / "claude-sessions"

    def _path(self, conversation: str) -> Path:
        return self.dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", conversation) + ".json")

    def get(self, conversation: str, session: int) -> str | None:
        data = read_json(self._path(conversation))
        if isinstance(data, dict) and data.get("session") == session:
            found = data.get("id")
            return found if isinstance(found, str) and found else None
        return None

    def put(self, conversation: str, session: int, session_id: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self._path(conversation), {"session": session, "id": session_id})


def run_task(task: Task, root: str, api: Api | None = None, port: int = MODEL_PORT) -> TaskResult:
    """One turn of the conversation by the Claude Agent SDK; ``api`` is a request on the
    agent socket, for clawpen's tools."""
    return asyncio.run(_run(task, root, api, port))


async def _run(task: Task, root: str, api: Api | None, port: int) -> TaskResult:
    from claude_agent_sdk import (  # only in the engine's image variant
        AssistantMessage,
        ClaudeAgentOptions,
        ResultMessage,
        TextBlock,
        query,
    )

    save_files(task.files, root)  # the text names them; the CLI's Read tool opens them
    ids = SessionIds(root)
    resume = ids.get(task.conversation, task.session)
    # the operator's MCP servers: stdio ones run by the CLI itself, remote ones through us
    external = {**stdio_servers(task), **remote_servers(task, api, root)}
    options = ClaudeAgentOptions(
        model=task.model,
        system_prompt=system_prompt(task.system_prompt, root) or None,
        cwd=root,
        resume=resume,
        permission_mode="bypassPermissions",
        mcp_servers={**external, MCP_SERVER: mcp_server(clawpen_tools(root, api))},
        allowed_tools=ALLOWED_TOOLS
        + [mcp_name(name) for name in MCP_TOOLS]
        + [f"mcp__{name}" for name in external],  # every tool of each of those servers
        max_turns=task.max_steps or None,
        env={**cli_environment(task.model, port), "HOME": os.environ.get("HOME", root)},
        setting_sources=[],
    )
    texts: list[str] = []
    final: Any = None
    tool_calls = 0
    async for message in query(prompt=user_turn(task), options=options):
        if isinstance(message, AssistantMessage):
            for block in message.content:
                if isinstance(block, TextBlock):
                    texts.append(block.text)
                elif type(block).__name__ == "ToolUseBlock":
                    tool_calls += 1
        elif isinstance(message, ResultMessage):
            final = message
    if final is None:
        return TaskResult(error="the claude-code engine ended without a result")
    if final.session_id:
        ids.put(task.conversation, task.session, final.session_id)
    if final.is_error:
        return TaskResult(error=f"claude-code: {final.result or final.subtype}")
    text = final.result if isinstance(final.result, str) else (texts[-1] if texts else "")
    return TaskResult(text=text, tool_calls=tool_calls)
