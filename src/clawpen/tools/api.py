"""What the tools are given of the core: two narrow protocols, so that no tool imports it.

The core's objects fit them as they are (``core.intake.Intake`` is ``Chats``,
``core.scheduler.Scheduler`` is ``JobBook``); ``app.py`` hands them in. The arrow points one
way: core knows nothing of the tools, and the tools know only these few methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..models import Address, Job, JobSpec, OutboundFile, Reply


class Chats(Protocol):
    """Which chat an agent is answering now, which chats are paired with which agent, and
    the commit of a message an agent sends on its own."""

    @property
    def pairings(self) -> Mapping[Address, str]: ...

    def answering(self, agent_id: str) -> Address | None: ...

    async def send_message(self, agent_id: str, address: Address, text: str) -> Reply | None: ...

    async def send_file(self, agent_id: str, file: OutboundFile) -> Reply | None: ...


class JobBook(Protocol):
    """An agent's jobs: read, added, removed (``agent/name``)."""

    async def jobs(self, agent_id: str | None = None) -> list[Job]: ...

    async def add(self, spec: JobSpec) -> Job: ...

    async def remove(self, ref: str) -> None: ...
