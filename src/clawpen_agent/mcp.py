"""MCP servers' tools for the model, named ``SERVER__tool``, with the standard library only.

Stdio servers (``command``) run here, in the container, with no network like everything here:
each is a child process spoken to in JSON-RPC, one message per line (MCP's stdio transport),
started on first use and kept for the next tasks. Remote servers (``remote``) are the
orchestrator's to reach: their tools are listed and called through the socket
(``MCP_TOOLS_PATH``, ``MCP_CALL_PATH``), and their credentials never come in here.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import queue
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from .protocol import MCP_CALL_PATH, MCP_SEPARATOR, MCP_TOOLS_PATH, WORKSPACE

PROTOCOL_VERSION = "2025-06-18"
START_TIMEOUT = 30.0  # seconds for a server to answer initialize
CALL_TIMEOUT = 120.0
MAX_TOOLS = 128  # per server
MAX_OUTPUT = 100_000

Api = Callable[[str, str, bytes | None], tuple[int, bytes]]


class McpError(Exception):
    """A server that failed, in a sentence for the model."""


class StdioServer:
    """One stdio MCP server, a child process of the agent."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], root: str) -> None:
        self.name = name
        self.log = open(os.path.join(root, ".clawpen", f"mcp-{name}.log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=root,
            env={**os.environ, **env},
            start_new_session=True,
        )
        self._ids = itertools.count(1)
        self._answers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name=f"mcp-{name}").start()
        self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "clawpen-agent", "version": "1"},
            },
            START_TIMEOUT,
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours to parse: a stray print
            if not isinstance(message, dict):
                continue
            answered = message.get("id")
            waiting = (
                self._answers.get(answered)
                if isinstance(answered, int) and "method" not in message
                else None
            )
            if waiting is not None:
                waiting.put(message)
            elif "method" in message and "id" in message:  # a request of the server's: refused
                error = {"code": -32601, "message": "not supported by this client"}
                self._send({"jsonrpc": "2.0", "id": message["id"], "error": error})
        for waiting in list(self._answers.values()):
            waiting.put({"error": {"message": "the server exited"}})

    def request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        request_id = next(self._ids)
        answer: queue.Queue[dict[str, Any]] = queue.Queue()
        self._answers[request_id] = answer
        try:
            self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            message = answer.get(timeout=timeout)
        except queue.Empty:
            raise McpError(f"{self.name} did not answer {method} within {timeout:.0f}s") from None
        except OSError as exc:
            raise McpError(f"{self.name} is not running ({exc})") from None
        finally:
            self._answers.pop(request_id, None)
        if "error" in message:
            error = message["error"]
            text = error.get("message") if isinstance(error, dict) else error
            raise McpError(f"{self.name}: {text}")
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    def tools(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < MAX_TOOLS:
            params = {"cursor": cursor} if cursor else {}
            page = self.request("tools/list", params, START_TIMEOUT)
            found += [t for t in page.get("tools", []) if isinstance(t, dict)]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return found[:MAX_TOOLS]

    def call(self, tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        result = self.request("tools/call", {"name": tool, "arguments": arguments}, CALL_TIMEOUT)
        return _text(result.get("content")), bool(result.get("isError"))

    def stop(self) -> None:
        if self.alive:
            self.process.kill()
            self.process.wait()
        self.log.close()


_running: dict[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], StdioServer] = {}


def stdio_server(spec: dict[str, Any], root: str) -> StdioServer:
    """The server for ``spec``, started once and kept (again if it died)."""
    command = tuple(str(part) for part in spec.get("command") or ())
    env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    key = (str(spec["name"]), command, tuple(sorted(env.items())))
    server = _running.get(key)
    if server is None or not server.alive:
        if server is not None:
            server.stop()
        os.makedirs(os.path.join(root, ".clawpen"), exist_ok=True)
        try:
            server = StdioServer(key[0], list(command), env, root)
        except OSError as exc:
            raise McpError(f"{key[0]} could not be started: {exc.strerror}") from None
        _running[key] = server
    return server


def stop_all() -> None:
    """End every stdio server (the agent is stopping)."""
    for server in _running.values():
        server.stop()
    _running.clear()


def _text(content: Any) -> str:
    parts = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict):
            parts.append(f"[{block.get('type', 'content')}]")
    return "\n".join(parts)[:MAX_OUTPUT]


class McpTools:
    """The task's MCP tools: their schemas for the model and the way to call each."""

    def __init__(self, servers: list[dict[str, Any]], api: Api | None, root: str = WORKSPACE):
        self.schemas: list[dict[str, Any]] = []
        self.problems: list[str] = []  # servers that could not be reached, for the log
        self._calls: dict[str, Callable[[dict[str, Any]], tuple[str, bool]]] = {}
        if any(spec.get("remote") for spec in servers):
            self._add_remote(api)
        for spec in servers:
            if spec.get("remote"):
                continue
            try:
                server = stdio_server(spec, root)
                listed = server.tools()
            except McpError as exc:
                self.problems.append(str(exc))
                continue
            for tool in listed:
                self._add(server, tool)

    def _add(self, server: StdioServer, tool: dict[str, Any]) -> None:
        name = f"{server.name}{MCP_SEPARATOR}{tool.get('name')}"
        if len(name) > 64:
            return  # the model API's limit on a tool's name
        self.schemas.append(
            {
                "name": name,
                "description": str(tool.get("description") or "")[:1024],
                "input_schema": tool.get("inputSchema") or {"type": "object"},
            }
        )
        self._calls[name] = functools.partial(_stdio_call, server, str(tool.get("name")))

    def _add_remote(self, api: Api | None) -> None:
        if api is None:
            return
        try:
            status, body = api("GET", MCP_TOOLS_PATH, None)
            listed = json.loads(body).get("tools", []) if status == 200 else None
        except (OSError, ValueError, AttributeError) as exc:
            self.problems.append(f"the remote MCP tools could not be listed ({exc})")
            return
        if not isinstance(listed, list):
            self.problems.append(f"the remote MCP tools could not be listed (HTTP {status})")
            return
        for tool in listed:
            if not isinstance(tool, dict):
                continue
            name = str(tool.get("name"))
            if len(name) > 64:
                continue
            self.schemas.append(tool)
            self._calls[name] = functools.partial(_remote_call, api, name)

    def handles(self, name: str) -> bool:
        return name in self._calls

    def run(self, name: str, args: dict[str, Any]) -> tuple[str, bool]:
        try:
            return self._calls[name](args)
        except McpError as exc:
            return str(exc), True


def _stdio_call(server: StdioServer, tool: str, args: dict[str, Any]) -> tuple[str, bool]:
    return server.call(tool, args)


def _remote_call(api: Api, name: str, args: dict[str, Any]) -> tuple[str, bool]:
    body = json.dumps({"name": name, "arguments": args}).encode()
    try:
        status, answer = api("POST", MCP_CALL_PATH, body)
    except OSError as exc:
        return f"the orchestrator did not answer ({exc})", True
    try:
        data = json.loads(answer) if answer else {}
    except ValueError:
        data = {}
    if status >= 400:
        return f"refused ({status}): {data.get('error') or answer[:300]!r}", True
    return str(data.get("text", "")), bool(data.get("is_error"))
