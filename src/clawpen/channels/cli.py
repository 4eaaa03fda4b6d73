"""The local CLI channel: `clawpen chat` talks to it through the owner-only admin socket."""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid

from ..models import InboundMessage, Rejection, Route
from .base import Accept


class CliChannel:
    name = "cli"
    max_message_length = 1_000_000

    def __init__(self) -> None:
        self._accept: Accept | None = None
        self._listeners: dict[str, set[asyncio.Queue[str]]] = {}
        self._ready = asyncio.Event()

    async def run(self, accept: Accept) -> None:
        self._accept = accept
        self._ready.set()
        await asyncio.Event().wait()  # replies arrive through send()

    async def ask(self, agent_id: str, text: str, sender: str | None = None) -> str:
        """Send ``text`` to an agent and wait for its reply (the chat id names the agent)."""
        await self._ready.wait()
        assert self._accept is not None
        queue: asyncio.Queue[str] = asyncio.Queue()
        listeners = self._listeners.setdefault(agent_id, set())
        listeners.add(queue)
        try:
            message = InboundMessage(
                channel=self.name,
                chat_id=agent_id,
                sender_id=sender or getpass.getuser(),
                text=text,
                platform_id=uuid.uuid4().hex,
                received_at=time.time(),
            )
            decision = await self._accept(message)
            if isinstance(decision, Rejection):
                raise LookupError(decision.reason)
            assert isinstance(decision, Route)
            return await queue.get()
        finally:
            listeners.discard(queue)

    async def send(self, chat_id: str, text: str) -> str:
        for queue in self._listeners.get(chat_id, ()):
            queue.put_nowait(text)
        return uuid.uuid4().hex
