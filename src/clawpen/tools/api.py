"""What the tools are given of the core: two narrow protocols, so that no tool imports it.

The core's objects fit them as they are (``core.intake.Intake`` is ``Chats``,
``core.scheduler.Scheduler`` is ``JobBook``); ``app.py`` hands them in. The arrow points one
way: core knows nothing of the tools, and the tools know only these few methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..models import Address, Job, JobSpec, OutboundFile, Reply, Verdict


class Chats(Protocol):
    """Which chat an agent is answering now, which chats are paired with which agent, and
    the commit of a message an agent sends on its own."""

    @property
    def pairings(self) -> Mapping[Address, str]: ...

    def answering(self, agent_id: str, task_id: int | None = None) -> Address | None: ...

    async def send_message(self, agent_id: str, address: Address, text: str) -> Reply | None: ...

    async def send_file(
        self, agent_id: str, file: OutboundFile, task_id: int | None = None
    ) -> Reply | None: ...


class JobBook(Protocol):
    """An agent's jobs: read, added, removed (``agent/name``)."""

    async def jobs(self, agent_id: str | None = None) -> list[Job]: ...

    async def add(self, spec: JobSpec) -> Job: ...

    async def remove(self, ref: str) -> None: ...


class Gate(Protocol):
    """Approvals (``core/approvals.py`` fits it): whether an action of this kind waits for a
    person, and the wait for their decision on this exact one."""

    def asks(self, agent_id: str, kind: str) -> bool: ...

    async def request(
        self,
        agent_id: str,
        kind: str,
        args: Mapping[str, object],
        summary: str,
        task_id: int | None = None,
    ) -> Verdict: ...


class NoGate:
    """Nothing waits (no approvals configured, or a unit test's tools)."""

    def asks(self, agent_id: str, kind: str) -> bool:
        return False

    async def request(
        self,
        agent_id: str,
        kind: str,
        args: Mapping[str, object],
        summary: str,
        task_id: int | None = None,
    ) -> Verdict:
        return Verdict("approved")


NO_GATE = NoGate()
