"""The local CLI channel: `clawpen chat` talks to it through the owner-only admin socket.

It holds no credential and speaks to no platform, so it stays in the orchestrator's process.
"""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid

from ..models import Address, InboundMessage, OutboundMessage, Rejection, Route
from .base import Accept, ChannelPlugin, ChannelSettings, RateLimitSettings


class CliSettings(ChannelSettings):
    pass


class CliChannel:
    name = "cli"
    max_message_length = 1_000_000

    def __init__(self, settings: CliSettings | None = None) -> None:
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
                address=Address(self.name, agent_id),
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

    async def send(self, message: OutboundMessage) -> str:
        for queue in self._listeners.get(message.address.chat, ()):
            queue.put_nowait(message.text)
        return uuid.uuid4().hex

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """The terminal shows its own "thinking" while it waits."""


plugin = ChannelPlugin(
    name="cli",
    settings=CliSettings,
    adapter=CliChannel,
    chat_pattern=r"[a-z0-9][a-z0-9_-]{0,39}",  # the chat id names the agent
    chat_example="cli:assistant",
    max_message_length=CliChannel.max_message_length,
    rate_limit=RateLimitSettings(per_chat=0, overall=0),
    in_process=True,
)
