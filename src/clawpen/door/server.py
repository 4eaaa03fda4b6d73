"""The orchestrator's end of each agent's Unix socket.

One aiohttp server per agent, each on its own socket file in a directory that only that agent's
container mounts. Whatever arrives on the socket is from that agent: identity is the path, so
there is nothing to forge. Tasks are handed over on a request the agent holds open, the moment
they exist. Nothing that arrives is trusted: ``caps.py`` caps connections, heads, bodies and
parsing per agent, and every body is checked by ``clawpen_agent.protocol`` before it is used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from clawpen_agent.protocol import (
    FILES_PATH,
    JOBS_PATH,
    MAX_JOB_BODY_BYTES,
    MAX_MCP_BODY_BYTES,
    MAX_SEND_BODY_BYTES,
    MAX_SEND_FILE_BYTES,
    MCP_CALL_PATH,
    MCP_TOOLS_PATH,
    MESSAGES_PATH,
    NEXT_TASK_PATH,
    OUTBOX_PATH,
    SOCKET_NAME,
    STOPPED_TASKS_PATH,
    TASK_HEADER,
    WEB_FETCH_PATH,
    FetchRequest,
    JobRequest,
    McpCall,
    OutgoingMessage,
    ProtocolError,
    Task,
    TaskResult,
    check_fetch_request,
    check_file_query,
    check_job_request,
    check_mcp_call,
    check_outgoing,
    check_result,
    parse_job_name,
    parse_task_id,
)

from ..models import Address
from .caps import Door, DoorLimits, Refused
from .proxy import ModelProxy, api_error


class AgentGone(Exception):
    """The agent's container went away while it held a task."""


class JobRefused(Exception):
    """A job request the orchestrator will not carry out: an HTTP status and a one-line why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AgentJobsApi(Protocol):
    """What an agent may do about its scheduled jobs (``tools/jobs.py``)."""

    async def create(
        self, agent_id: str, request: JobRequest, task_id: int | None = None
    ) -> dict[str, Any]: ...

    async def list(self, agent_id: str) -> list[dict[str, Any]]: ...

    async def cancel(self, agent_id: str, name: str) -> dict[str, Any]: ...


class ToolRefused(JobRefused):
    """A send_message or web_fetch the orchestrator will not carry out (the same shape)."""


class AgentMessagesApi(Protocol):
    """What an agent may say on its own (``tools/send.py``)."""

    async def send(
        self, agent_id: str, message: OutgoingMessage, task_id: int | None = None
    ) -> dict[str, Any]: ...


class AgentFilesApi(Protocol):
    """What an agent may send back (``tools/files.py``): ``target`` decides where the file
    goes and whether its size is allowed there, before a byte of it is read."""

    def target(self, agent_id: str, size: int, task_id: int | None = None) -> Address: ...

    async def send(
        self,
        agent_id: str,
        target: Address,
        name: str,
        caption: str,
        data: bytes,
        task_id: int | None = None,
    ) -> dict[str, Any]: ...


class AgentMcpApi(Protocol):
    """An agent's remote MCP servers (``tools/mcp.py``), reached by the orchestrator."""

    async def tools(self, agent_id: str) -> list[dict[str, Any]]: ...

    async def call(
        self, agent_id: str, call: McpCall, task_id: int | None = None
    ) -> dict[str, Any]: ...


class AgentWebApi(Protocol):
    """What an agent may fetch (``tools/web.py``)."""

    async def fetch(self, agent_id: str, request: FetchRequest) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AgentTools:
    """The tools the orchestrator carries out for an agent (``tools/``); one left out answers
    503 to the agent that calls it."""

    jobs: AgentJobsApi | None = None
    messages: AgentMessagesApi | None = None
    web: AgentWebApi | None = None
    files: AgentFilesApi | None = None
    mcp: AgentMcpApi | None = None


NO_TOOLS = AgentTools()


class AgentSession:
    """One agent's socket: offers tasks (each to the first of the agent's lanes that asks),
    collects their results, and tells the agent which of its tasks the user stopped."""

    def __init__(
        self,
        agent_id: str,
        socket_dir: Path,
        proxy: ModelProxy,
        limits: DoorLimits | None = None,
        tools: AgentTools = NO_TOOLS,
    ) -> None:
        self.agent_id = agent_id
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / SOCKET_NAME
        self.proxy = proxy
        self._offers: collections.deque[Task] = collections.deque()
        self._stopped: list[int] = []  # tasks to stop inside the container, not yet told
        self._changed = asyncio.Condition()
        self._waiting = 0  # requests for a task currently held open by the agent
        self._results: dict[int, asyncio.Future[TaskResult]] = {}
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._gone: AgentGone | None = None  # set when the agent's container died
        self._alive = False
        self.door = Door(agent_id, limits or DoorLimits())
        self.jobs = tools.jobs
        self.messages = tools.messages
        self.web = tools.web
        self.files = tools.files
        self.mcp = tools.mcp
        self._uploading = asyncio.Lock()  # one file's body read at a time, per agent

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_dir, 0o755)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        limits = self.door.limits
        app = web.Application(
            client_max_size=max(limits.result_body_max, limits.messages_body_max),
            middlewares=self.door.middlewares,
        )
        app.router.add_get(NEXT_TASK_PATH, self._next_task)
        app.router.add_get(STOPPED_TASKS_PATH, self._stopped_tasks)
        app.router.add_post("/v1/tasks/{task_id}/result", self._result)
        app.router.add_post(MESSAGES_PATH, self._messages)
        app.router.add_post(MESSAGES_PATH + "/count_tokens", self._messages)
        app.router.add_post(JOBS_PATH, self._create_job)
        app.router.add_get(JOBS_PATH, self._list_jobs)
        app.router.add_delete(JOBS_PATH + "/{name}", self._cancel_job)
        app.router.add_post(OUTBOX_PATH, self._send_message)
        app.router.add_post(WEB_FETCH_PATH, self._web_fetch)
        app.router.add_post(FILES_PATH, self._send_file)
        app.router.add_get(MCP_TOOLS_PATH, self._mcp_tools)
        app.router.add_post(MCP_CALL_PATH, self._mcp_call)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=2, **limits.handler_kwargs()
        )
        await self._runner.setup()
        await self.door.serve(self._runner, str(self.socket_path))
        # The agent runs as an unprivileged uid; the directory is mounted into its container only.
        os.chmod(self.socket_path, 0o666)

    async def close(self) -> None:
        await self.fail_all(AgentGone("the orchestrator is shutting down"))
        async with self._changed:
            self._closing = True  # answer the agent's held-open request now
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the orchestrator's side ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the agent holds a request open, waiting for work."""
        return self._waiting > 0

    @property
    def alive(self) -> bool:
        """True from the agent's first request for work after ``expect_agent`` until
        ``fail_all``: between two tasks it runs, even though it holds no request open."""
        return self._alive

    def expect_agent(self) -> None:
        """A (new) container is starting: forget that the last one died."""
        self._gone = None
        self._alive = False
        self._stopped.clear()  # the last container's tasks went with it

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._waiting > 0 or self._gone is not None)
        if self._gone is not None:
            raise self._gone

    async def run(self, task: Task, timeout: float | None) -> TaskResult:
        """Hand ``task`` to the agent and wait for its result."""
        future: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        self._results[task.id] = future
        try:
            async with self._changed:
                self._offers.append(task)
                self._changed.notify_all()
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._results.pop(task.id, None)
            if task in self._offers:
                self._offers.remove(task)

    async def stop_task(self, task_id: int) -> None:
        """Tell the agent to stop ``task_id`` (its tools' processes killed), leaving its other
        tasks at work; its result, should one still come, is no longer awaited."""
        future = self._results.pop(task_id, None)
        if future is not None and not future.done():
            future.cancel()
        async with self._changed:
            self._stopped.append(task_id)
            self._changed.notify_all()

    async def fail_all(self, error: AgentGone) -> None:
        """Wake everyone waiting on the agent: it will not answer them."""
        self._gone = error
        self._alive = False
        for future in self._results.values():
            if not future.done():
                future.set_exception(error)
        async with self._changed:
            self._changed.notify_all()

    # -- the agent's side -----------------------------------------------------------------------

    async def _next_task(self, request: web.Request) -> web.Response:
        async with self._changed:
            self._waiting += 1
            self._alive = self._alive or self._gone is None
            self._changed.notify_all()
            try:
                await self._changed.wait_for(lambda: bool(self._offers) or self._closing)
            finally:
                self._waiting -= 1
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the agent hung up: keep the task for the next
            task = self._offers.popleft() if self._offers else None
        if task is None:
            return web.Response(status=503, text="orchestrator shutting down")
        return web.Response(body=task.to_json(), content_type="application/json")

    async def _stopped_tasks(self, request: web.Request) -> web.Response:
        """Held open until the user stops one of the agent's tasks: the ids to stop."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._stopped) or self._closing)
            if not self._stopped:
                return web.Response(status=503, text="orchestrator shutting down")
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the agent hung up: tell its next request
            stopped, self._stopped = self._stopped, []
        return web.json_response({"tasks": stopped})

    async def _result(self, request: web.Request) -> web.Response:
        try:
            task_id = parse_task_id(request.match_info["task_id"])
        except ProtocolError as exc:
            return self._refuse(Refused(400, "bad_task_id", str(exc)))
        try:
            async with self.door.json_body(request, self.door.limits.result_body_max) as body:
                result = check_result(body[1])
        except ProtocolError as exc:
            return self._refuse(Refused(400, "invalid_result", str(exc)))
        except Refused as refusal:
            return self._refuse(refusal)
        future = self._results.get(task_id)
        accepted = future is not None and not future.done()
        if future is not None and accepted:
            future.set_result(result)
        if request.query.get("next") == "1":  # the agent wants its next task in this answer
            return await self._next_task(request)
        if not accepted:
            return web.json_response({"accepted": False}, status=410)
        return web.json_response({"accepted": True})

    def _refuse(self, refusal: Refused) -> web.Response:
        self.door.refused(refusal)
        body = {"accepted": False, "error": refusal.message}
        return web.json_response(body, status=refusal.status, headers=refusal.headers)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            async with self.door.json_body(request, self.door.limits.messages_body_max) as body:
                return await self.proxy.handle(self.agent_id, request, *body)
        except Refused as refusal:
            self.door.refused(refusal)
            kind = API_ERRORS.get(refusal.status, "invalid_request_error")
            return api_error(refusal.status, kind, refusal.message, refusal.headers)

    # -- scheduled jobs (the agent's tools) -----------------------------------------------------

    async def _tool(
        self, invalid: str, call: Callable[[], Awaitable[web.Response]]
    ) -> web.Response:
        """A tool's route: a request the agent got wrong is a 400 named ``invalid``; a refusal,
        the door's or the tool's, is answered as one (and counted), never raised."""
        try:
            return await call()
        except ProtocolError as exc:
            return self._refuse(Refused(400, invalid, str(exc)))
        except Refused as refusal:
            return self._refuse(refusal)
        except JobRefused as exc:
            return self._refuse_job(exc)

    async def _create_job(self, request: web.Request) -> web.Response:
        async def create() -> web.Response:
            async with self.door.json_body(request, MAX_JOB_BODY_BYTES) as body:
                job = check_job_request(body[1])
            created = await self._jobs().create(self.agent_id, job, _task_of(request))
            return web.json_response(created, status=201)

        return await self._tool("invalid_job", create)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        async def listed() -> web.Response:
            return web.json_response({"jobs": await self._jobs().list(self.agent_id)})

        return await self._tool("invalid_job", listed)

    async def _cancel_job(self, request: web.Request) -> web.Response:
        async def cancel() -> web.Response:
            name = parse_job_name(request.match_info["name"])
            return web.json_response(await self._jobs().cancel(self.agent_id, name))

        return await self._tool("bad_job_name", cancel)

    def _jobs(self) -> AgentJobsApi:
        if self.jobs is None:
            raise JobRefused(503, "scheduled jobs are not available")
        return self.jobs

    def _refuse_job(self, exc: JobRefused) -> web.Response:
        reason = "tool_refused" if isinstance(exc, ToolRefused) else "job_refused"
        self.door.refused(Refused(exc.status, reason, exc.message))
        return web.json_response({"error": exc.message}, status=exc.status)

    # -- reaching out: send_message, web_fetch, send_file (the agent's tools) ----------------------

    async def _send_message(self, request: web.Request) -> web.Response:
        async def send() -> web.Response:
            async with self.door.json_body(request, MAX_SEND_BODY_BYTES) as body:
                message = check_outgoing(body[1])
            if self.messages is None:
                raise ToolRefused(503, "send_message is not available")
            sent = await self.messages.send(self.agent_id, message, _task_of(request))
            return web.json_response(sent)

        return await self._tool("invalid_message", send)

    async def _web_fetch(self, request: web.Request) -> web.Response:
        async def fetch() -> web.Response:
            async with self.door.json_body(request, MAX_SEND_BODY_BYTES) as body:
                asked = check_fetch_request(body[1])
            if self.web is None:
                raise ToolRefused(503, "web_fetch is not available")
            return web.json_response(await self.web.fetch(self.agent_id, asked))

        return await self._tool("invalid_fetch", fetch)

    async def _send_file(self, request: web.Request) -> web.Response:
        """A file's bytes, as the body (never a path: the host opens nothing the agent names).
        Its size is checked from the head first; a file over the platform's limit is refused
        after its body is read off and dropped, so the agent hears why (the limit, named)."""

        async def send() -> web.Response:
            name, caption = check_file_query(request.query)
            size = request.content_length
            if size is None:
                raise Refused(411, "length_required", "send the file with a Content-Length")
            if size > MAX_SEND_FILE_BYTES:
                raise Refused(
                    413,
                    "body_too_large",
                    f"the file is {size} bytes, over the limit of {MAX_SEND_FILE_BYTES} bytes",
                )
            if self.files is None:
                raise ToolRefused(503, "send_file is not available")
            task_id = _task_of(request)
            async with self._uploading:
                try:
                    target = self.files.target(self.agent_id, size, task_id)
                except ToolRefused:
                    await self.door.discard_body(request, size)
                    raise
                data = await self.door.raw_body(request, size)
            sent = await self.files.send(self.agent_id, target, name, caption, data, task_id)
            return web.json_response(sent)

        return await self._tool("invalid_file", send)

    # -- remote MCP servers: listed and called by the orchestrator ---------------------------------

    async def _mcp_tools(self, request: web.Request) -> web.Response:
        if self.mcp is None:
            return web.json_response({"tools": []})
        return web.json_response({"tools": await self.mcp.tools(self.agent_id)})

    async def _mcp_call(self, request: web.Request) -> web.Response:
        async def call() -> web.Response:
            async with self.door.json_body(request, MAX_MCP_BODY_BYTES) as body:
                asked = check_mcp_call(body[1])
            if self.mcp is None:
                raise ToolRefused(503, "MCP servers are not available")
            return web.json_response(await self.mcp.call(self.agent_id, asked, _task_of(request)))

        return await self._tool("invalid_mcp_call", call)


def _task_of(request: web.Request) -> int | None:
    """The task a tool call is made for (its lane names it), when it names one as a number:
    the tools act for that task's chat only if the agent is at work on it."""
    raw = request.headers.get(TASK_HEADER, "")
    try:
        return parse_task_id(raw)
    except ProtocolError:
        return None


API_ERRORS = {413: "request_too_large", 429: "rate_limit_error"}
