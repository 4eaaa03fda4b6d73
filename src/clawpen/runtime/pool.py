"""Agent lifecycle: a socket for every configured agent, a container only while it is needed.

Containers start on an agent's first task, are frozen (paused: no CPU, memory kept) after a
short idleness where the runtime can, stop when it has been idle long enough, are evicted
least-recently-used when ``max_containers`` run, and are adopted (never duplicated) after an
orchestrator restart. A frozen agent's next task thaws it: milliseconds, not a cold start. A
container that dies on its own fails the task it held, so the agent's worker can retry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from ..config import AgentSettings, Settings
from ..config.skills import read_skills
from ..door.proxy import ModelProxy
from ..door.server import NO_TOOLS, AgentGone, AgentSession, AgentTools
from ..errors import ClawpenError, StoreError
from ..obs.logging import get_logger
from ..obs.metrics import Metrics
from ..retry import RESTART, Retrier
from ..store import Store
from .base import AgentRuntime, AgentSpec, PausableRuntime, RuntimeEvent
from .image import engine_tag
from .mounts import MountRequest

START_TIMEOUT = 30.0


def instance_id(data_dir: Path) -> str:
    """Names this orchestrator's containers, so two data dirs never share an agent."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


def agent_spec(settings: Settings, agent: AgentSettings) -> AgentSpec:
    return AgentSpec(
        agent_id=agent.id,
        instance=instance_id(settings.data_dir),
        image=engine_tag(settings.image, agent.engine),
        socket_dir=settings.data_dir / "agents" / agent.id,
        memory_mb=agent.memory_mb,
        cpus=agent.cpus,
        pids_limit=agent.pids_limit,
        tmp_mb=agent.tmp_mb,
        egress=bool(agent.egress.allow) or "egress" in agent.approvals.ask,
        workspace_mb=agent.workspace_mb,
        runtime=agent.runtime or settings.runtime,
        # approvals.ask: [mounts]: a read-write mount is staged, its writes applied on a tap
        mounts=(
            *(
                MountRequest(
                    m.host,
                    m.container,
                    m.read_only,
                    staged=not m.read_only and "mounts" in agent.approvals.ask,
                )
                for m in agent.mounts
            ),
            *(
                MountRequest(str(skill.folder), skill.container_path, read_only=True)
                for skill in read_skills(agent.skills)
            ),
        ),
        lanes=agent.max_parallel,
    )


class AgentStartError(ClawpenError):
    pass


class AgentPool:
    def __init__(
        self,
        settings: Settings,
        runtime: AgentRuntime,
        proxy: ModelProxy,
        store: Store,
        metrics: Metrics,
        tools: AgentTools = NO_TOOLS,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.store = store
        self.metrics = metrics
        self.log = get_logger()
        self.specs = {a.id: agent_spec(settings, a) for a in settings.agents}
        self.sessions = {
            a.id: AgentSession(a.id, self.specs[a.id].socket_dir, proxy, tools=tools)
            for a in settings.agents
        }
        self.containers: dict[str, str] = {}  # agent id -> id of its running container
        self.paused: set[str] = set()  # agents whose container is frozen (among containers)
        self.busy: dict[str, int] = {}  # agent id -> its tasks at work (never 0: removed)
        self.last_used: dict[str, float] = {}
        self._locks = {a.id: asyncio.Lock() for a in settings.agents}
        self._freed = asyncio.Event()
        self._starting: dict[str, asyncio.Future[str]] = {}
        self._crashed: set[str] = set()  # agents whose next start is a restart after a crash

    async def open(self) -> None:
        """Serve every agent's socket and adopt the containers still running from before."""
        for session in self.sessions.values():
            await session.start()
        for agent_id, container_id in (await self.runtime.running()).items():
            if agent_id not in self.sessions:
                await self.runtime.stop(agent_id)  # no longer configured
                continue
            self.containers[agent_id] = container_id
            self.last_used[agent_id] = time.monotonic()
            self.log.info("agent_adopted", agentId=agent_id, container=container_id[:12])
        self.metrics.running_agents.set(len(self.containers))

    @contextlib.asynccontextmanager
    async def working(self, agent_id: str) -> AsyncIterator[None]:
        """Marks the agent busy, so it is not evicted to make room for another."""
        self.busy[agent_id] = self.busy.get(agent_id, 0) + 1
        try:
            yield
        finally:
            self.busy[agent_id] -= 1
            if not self.busy[agent_id]:
                del self.busy[agent_id]
            self.last_used[agent_id] = time.monotonic()
            self._freed.set()

    async def ensure(self, agent_id: str) -> AgentSession:
        """The agent's session, with its container running and connected to it."""
        session = self.sessions[agent_id]
        async with self._locks[agent_id]:
            if agent_id in self.paused and not await self._thaw(agent_id):
                await self._forget(agent_id)  # it cannot be thawed: a fresh one instead
            if agent_id in self.containers and session.alive:
                return session  # between two tasks: running, and back for the next in a moment
            await self._make_room(agent_id)
            started = time.perf_counter()
            session.expect_agent()
            # A task of its own, shielded: if we are cancelled (shutdown) the start still
            # finishes, and close() knows there is one more container to stop.
            start = asyncio.ensure_future(self.runtime.start(self.specs[agent_id]))
            self._starting[agent_id] = start
            try:
                container_id = await asyncio.shield(start)
            finally:
                if start.done():
                    del self._starting[agent_id]
            fresh = self.containers.get(agent_id) != container_id
            self.containers[agent_id] = container_id
            try:
                await session.wait_connected(START_TIMEOUT)
            except TimeoutError:
                raise AgentStartError(
                    f"agent {agent_id} did not connect within {START_TIMEOUT:.0f}s",
                    f"check `docker logs {container_id[:12]}`",
                ) from None
            if fresh:
                await self._record_state(agent_id, "running", container_id)
                self.metrics.running_agents.set(len(self.containers))
                self.metrics.agent_starts.labels(agent_id).inc()
                self.metrics.cold_start.labels(agent_id).observe(time.perf_counter() - started)
                if agent_id in self._crashed:
                    self._crashed.discard(agent_id)
                    self.metrics.agent_restarts.labels(agent_id).inc()
                self.log.info(
                    "agent_started",
                    agentId=agent_id,
                    container=container_id[:12],
                    duration=round(time.perf_counter() - started, 4),
                )
            return session

    @property
    def can_pause(self) -> bool:
        return isinstance(self.runtime, PausableRuntime)

    async def pause(self, agent_id: str) -> None:
        """Freeze an idle agent's container (no CPU, its memory kept); its next task thaws it.
        Nothing happens where the runtime cannot pause, or when the agent is busy, stopped or
        frozen already; a failure leaves it running (it is stopped at ``idle_timeout``)."""
        if not isinstance(self.runtime, PausableRuntime):
            return
        async with self._locks[agent_id]:
            if agent_id not in self.containers or agent_id in self.busy or agent_id in self.paused:
                return
            try:
                await self.runtime.pause(agent_id)
            except ClawpenError as exc:
                self.log.warning("agent_pause_failed", agentId=agent_id, error=str(exc))
                return
            self.paused.add(agent_id)
            await self._record_state(agent_id, "paused", self.containers[agent_id])
            self.log.info("agent_paused", agentId=agent_id)

    async def _thaw(self, agent_id: str) -> bool:
        """Unpause a frozen agent (under its lock): True when it runs again."""
        assert isinstance(self.runtime, PausableRuntime)
        began = time.perf_counter()
        self.paused.discard(agent_id)
        try:
            await self.runtime.unpause(agent_id)
        except ClawpenError as exc:
            self.log.warning("agent_unpause_failed", agentId=agent_id, error=str(exc))
            return False
        await self._record_state(agent_id, "running", self.containers.get(agent_id))
        self.log.info(
            "agent_resumed", agentId=agent_id, duration=round(time.perf_counter() - began, 4)
        )
        return True

    async def _forget(self, agent_id: str) -> None:
        """Stop and forget a container that cannot be used (under the agent's lock)."""
        self.containers.pop(agent_id, None)
        with contextlib.suppress(ClawpenError):
            await self.runtime.stop(agent_id)
        await self.sessions[agent_id].fail_all(AgentGone("agent could not be resumed"))
        self.metrics.running_agents.set(len(self.containers))

    async def _make_room(self, agent_id: str) -> None:
        """Under ``max_containers``: stop the least recently used idle agent, or wait for one."""
        while agent_id not in self.containers and len(self.containers) >= (
            self.settings.max_containers
        ):
            idle = [a for a in self.containers if a not in self.busy and a != agent_id]
            if idle:
                victim = min(idle, key=lambda a: self.last_used.get(a, 0.0))
                await self.stop(victim, "making room")
                continue
            self._freed.clear()
            await self._freed.wait()

    async def stop(self, agent_id: str, reason: str) -> None:
        async with self._locks[agent_id]:
            self.containers.pop(agent_id, None)  # first: its death is expected, not a crash
            self.paused.discard(agent_id)  # removing a frozen container needs no thaw first
            try:
                await self.runtime.stop(agent_id)
            except ClawpenError as exc:  # the engine is gone; so, then, is the container
                self.log.error("agent_stop_failed", agentId=agent_id, error=str(exc))
            await self.sessions[agent_id].fail_all(AgentGone(f"agent stopped: {reason}"))
            await self._record_state(agent_id, "stopped")
            self.metrics.running_agents.set(len(self.containers))
            self._freed.set()
            self.log.info("agent_stopped", agentId=agent_id, reason=reason)

    async def _record_state(
        self, agent_id: str, state: str, container_id: str | None = None
    ) -> None:
        """Informational only (for `clawpen status`): a full disk must not stop an agent."""
        try:
            await self.store.set_agent_state(agent_id, state, container_id, time.time())
        except StoreError as exc:
            self.log.error("store_unwritable", what="agent state", error=str(exc))

    async def watch(self) -> None:
        """Follow the runtime's events for as long as the orchestrator runs."""
        retrier = Retrier(RESTART)
        while True:
            try:
                async for event in self.runtime.events():
                    retrier.reset()
                    await self.on_event(event)
            except Exception as exc:  # dockerd restarted: subscribe again
                delay = retrier.next_delay()
                self.log.warning("runtime_events_lost", error=str(exc), retryIn=delay)
                await asyncio.sleep(delay)
            else:
                await retrier.wait()

    async def on_event(self, event: RuntimeEvent) -> None:
        if event.kind == "oom":
            self.log.warning("agent_oom", agentId=event.agent_id)
            return
        if self.containers.get(event.agent_id) != event.container_id:
            return  # one we stopped ourselves, or an old one
        del self.containers[event.agent_id]
        self.paused.discard(event.agent_id)
        self.metrics.running_agents.set(len(self.containers))
        self._freed.set()
        self.log.error("agent_crashed", agentId=event.agent_id, detail=event.detail)
        self.metrics.agent_crashes.labels(event.agent_id).inc()
        self._crashed.add(event.agent_id)
        await self.sessions[event.agent_id].fail_all(AgentGone(f"container exited: {event.detail}"))

    async def close(self, stop_agents: bool = True) -> None:
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        if stop_agents:
            agents = set(self.containers) | set(self._starting)
            await asyncio.gather(*(self.stop(a, "shutdown") for a in agents))
        self._starting.clear()
        for session in self.sessions.values():
            await session.close()
