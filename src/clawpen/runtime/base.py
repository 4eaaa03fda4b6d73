"""The seam between the orchestrator and whatever runs agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from .mounts import MountRequest


@dataclass(frozen=True)
class AgentSpec:
    """Everything needed to start one agent, decided before any I/O."""

    agent_id: str
    instance: str  # which orchestrator (data_dir) the agent belongs to
    image: str
    socket_dir: Path  # the one host path the agent may see
    memory_mb: int = 512
    cpus: float = 0.5
    pids_limit: int = 256
    tmp_mb: int = 64
    egress: bool = False  # a proxy for allowed hosts: HTTPS_PROXY and the forwarder are set up
    # /workspace's own size limit (an ext4 image under data_dir); 0: a Docker volume, no limit
    workspace_mb: int = 0
    runtime: str = "runc"  # the OCI runtime: runc, or runsc (gVisor)
    mounts: tuple[MountRequest, ...] = ()  # extra host folders, granted by the allowlist
    lanes: int = 1  # tasks it runs at once (agents[].max_parallel)

    @property
    def data_dir(self) -> Path:
        return self.socket_dir.parent.parent  # data_dir/agents/ID


@dataclass(frozen=True)
class RuntimeEvent:
    """Something happened to an agent's container that nobody asked for."""

    kind: Literal["exit", "oom"]
    agent_id: str
    container_id: str
    detail: str = ""


class AgentRuntime(Protocol):
    async def start(self, spec: AgentSpec) -> str:
        """Make sure exactly one instance of the agent runs; returns its id."""

    async def stop(self, agent_id: str) -> None:
        """Stop and remove the agent's container (its workspace is kept)."""

    async def running(self) -> dict[str, str]:
        """Agents of this instance that run now: agent id -> container id."""

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Exits and OOM kills of this instance's agents, as they happen."""

    async def close(self) -> None:
        """Release the runtime's own resources."""


@runtime_checkable
class PausableRuntime(Protocol):
    """A runtime that can freeze an idle agent's container (Docker's cgroup freezer: no CPU,
    its memory kept) and thaw it in milliseconds, instead of a cold start. Runtimes without
    one (Kubernetes has no pause; in-process threads) keep an idle agent running until its
    ``idle_timeout`` stops it."""

    async def pause(self, agent_id: str) -> None:
        """Freeze the agent's running container."""

    async def unpause(self, agent_id: str) -> None:
        """Thaw it: it carries on where it was (its held-open request for work included)."""
