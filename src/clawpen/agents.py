"""Agent lifecycle: a socket for every configured agent, a container only while it is needed."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from .agentapi import AgentSession
from .config import AgentSettings, Settings
from .errors import ClawpenError
from .logging import get_logger
from .metrics import Metrics
from .proxy import ModelProxy
from .runtime.base import AgentRuntime, AgentSpec
from .store import Store

START_TIMEOUT = 30.0


def instance_id(data_dir: Path) -> str:
    """Names this orchestrator's containers, so two data dirs never share an agent."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


def agent_spec(settings: Settings, agent: AgentSettings) -> AgentSpec:
    return AgentSpec(
        agent_id=agent.id,
        instance=instance_id(settings.data_dir),
        image=settings.image,
        socket_dir=settings.data_dir / "agents" / agent.id,
        memory_mb=agent.memory_mb,
        cpus=agent.cpus,
        pids_limit=agent.pids_limit,
        tmp_mb=agent.tmp_mb,
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
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.store = store
        self.metrics = metrics
        self.log = get_logger()
        self.specs = {a.id: agent_spec(settings, a) for a in settings.agents}
        self.sessions = {
            a.id: AgentSession(a.id, self.specs[a.id].socket_dir, proxy) for a in settings.agents
        }
        self.containers: dict[str, str] = {}
        self._locks = {a.id: asyncio.Lock() for a in settings.agents}

    async def open(self) -> None:
        """Serve every agent's socket and adopt the containers still running from before."""
        for session in self.sessions.values():
            await session.start()
        running = await self.runtime.running()
        for agent_id, container_id in running.items():
            if agent_id not in self.sessions:
                await self.runtime.stop(agent_id)  # no longer configured
                continue
            self.containers[agent_id] = container_id
            self.log.info("agent_adopted", agentId=agent_id, container=container_id[:12])
        self.metrics.running_agents.set(len(self.containers))

    async def ensure(self, agent_id: str) -> AgentSession:
        """The agent's session, with a running agent connected to it."""
        session = self.sessions[agent_id]
        async with self._locks[agent_id]:
            if session.connected:
                return session
            started = time.perf_counter()
            container_id = await self.runtime.start(self.specs[agent_id])
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
                self.store.set_agent_state(agent_id, "running", container_id)
                self.metrics.running_agents.set(len(self.containers))
                self.log.info(
                    "agent_started",
                    agentId=agent_id,
                    container=container_id[:12],
                    duration=round(time.perf_counter() - started, 4),
                )
            return session

    async def stop(self, agent_id: str, reason: str) -> None:
        async with self._locks[agent_id]:
            await self.runtime.stop(agent_id)
            self.containers.pop(agent_id, None)
            self.sessions[agent_id].fail_all(f"agent stopped: {reason}")
            self.store.set_agent_state(agent_id, "stopped")
            self.metrics.running_agents.set(len(self.containers))
            self.log.info("agent_stopped", agentId=agent_id, reason=reason)

    async def close(self, stop_agents: bool = True) -> None:
        if stop_agents:
            await asyncio.gather(*(self.stop(a, "shutdown") for a in list(self.containers)))
        for session in self.sessions.values():
            await session.close()
