"""An in-memory runtime: agents as tasks of the test's event loop, containers as dict entries.

Each "container" runs a tiny agent that speaks the real socket protocol (it asks for work on
the agent's socket and posts results), answering with a function of the task. A test can make a
container crash (``crash``), crash on the tasks it chooses (``crash_on``), or refuse to start,
and count how often Docker would have been asked to start one (``starts``): the crash/retry path
and the pool's behaviour get fast unit tests without Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path

import aiohttp

from clawpen.errors import DockerUnavailable
from clawpen.runtime.base import AgentSpec, RuntimeEvent
from clawpen_agent.protocol import NEXT_TASK_PATH, SOCKET_NAME, Task, TaskResult, result_path

Answer = Callable[[Task], TaskResult]


def echo(task: Task) -> TaskResult:
    return TaskResult(text="echo: " + " / ".join(line.text for line in task.lines))


class FakeRuntime:
    def __init__(self, answer: Answer = echo) -> None:
        self.answer = answer
        self.containers: dict[str, str] = {}  # agent id -> container id
        self.starts: list[str] = []  # agent ids, once per start asked of the "engine"
        self.stops: list[str] = []
        self.tasks_seen: list[tuple[str, int]] = []  # (agent id, task id) as delivered
        self.crash_on: Callable[[str, Task], bool] = lambda agent_id, task: False
        self.unavailable = False  # the "engine" refuses to start anything
        self._agents: dict[str, asyncio.Task[None]] = {}
        self._events: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        self._ids = itertools.count(1)

    async def start(self, spec: AgentSpec) -> str:
        self.starts.append(spec.agent_id)
        if self.unavailable:
            raise DockerUnavailable("the fake engine is down", "set unavailable = False")
        if spec.agent_id in self.containers:
            return self.containers[spec.agent_id]
        container_id = f"fake-{next(self._ids):04d}"
        self.containers[spec.agent_id] = container_id
        socket_path = spec.socket_dir / SOCKET_NAME
        self._agents[spec.agent_id] = asyncio.create_task(
            self._agent(spec.agent_id, socket_path), name=f"fake-agent-{spec.agent_id}"
        )
        return container_id

    async def stop(self, agent_id: str) -> None:
        self.stops.append(agent_id)
        self.containers.pop(agent_id, None)
        await self._end(agent_id)

    def crash(self, agent_id: str, detail: str = "exit code 137") -> None:
        """The container dies on its own: Docker would report a ``die`` event."""
        container_id = self.containers.pop(agent_id, None)
        task = self._agents.pop(agent_id, None)
        if task is not None:
            task.cancel()
        if container_id is not None:
            self._events.put_nowait(RuntimeEvent("exit", agent_id, container_id, detail))

    async def running(self) -> dict[str, str]:
        return dict(self.containers)

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        while True:
            yield await self._events.get()

    async def close(self) -> None:
        for agent_id in list(self._agents):
            await self._end(agent_id)

    async def _end(self, agent_id: str) -> None:
        task = self._agents.pop(agent_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _agent(self, agent_id: str, socket_path: Path) -> None:
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None)
        ) as http:
            while True:
                try:
                    async with http.get(f"http://agent{NEXT_TASK_PATH}") as response:
                        if response.status != 200:
                            await asyncio.sleep(0.05)
                            continue
                        task = Task.from_json(await response.read())
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)  # the orchestrator is not (yet) listening
                    continue
                self.tasks_seen.append((agent_id, task.id))
                if self.crash_on(agent_id, task):
                    asyncio.get_running_loop().call_soon(self.crash, agent_id)
                    await asyncio.Event().wait()
                await self._hand_in(http, task.id, self.answer(task))

    @staticmethod
    async def _hand_in(http: aiohttp.ClientSession, task_id: int, result: TaskResult) -> None:
        """As the real agent does: a result the door refuses is replaced by an error result,
        so the task still ends."""
        for attempt in (result, None):
            body = (
                json.dumps(asdict(attempt)).encode()
                if attempt is not None
                else TaskResult(error="the orchestrator refused my result").to_json()
            )
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(
                    f"http://agent{result_path(task_id)}",
                    data=body,
                    headers={"content-type": "application/json"},
                ) as response:
                    await response.read()
                    if response.status != 400:
                        return
