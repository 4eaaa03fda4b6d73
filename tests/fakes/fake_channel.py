"""An in-memory channel: a test plays the user with ``push`` and reads what was ``sent``.

Sends to a chat can be made to fail (``fail_next``: a 429 with its wait, a 5xx, a permanent
refusal), per chat, so that the outbox's ordering and pacing have fast unit tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from clawpen.channels.base import Accept, DeliveryStatus, SendError, report_status
from clawpen.models import (
    Address,
    Attachment,
    Decision,
    InboundMessage,
    OutboundFile,
    OutboundMessage,
)


@dataclass
class SentMessage:
    message: OutboundMessage
    platform_id: str
    at: float  # time.monotonic() when it was accepted


@dataclass
class MemoryChannel:
    name: str = "telegram"
    max_message_length: int = 4096
    sent: list[SentMessage] = field(default_factory=list)
    # everything delivered in order, texts and files alike (``send_file``)
    delivered: list[OutboundMessage | OutboundFile] = field(default_factory=list)
    files: list[OutboundFile] = field(default_factory=list)
    attempts: list[tuple[OutboundMessage, float]] = field(default_factory=list)
    failures: dict[str, list[SendError]] = field(default_factory=dict)  # chat -> next errors
    typing_calls: list[tuple[Address, str, bool]] = field(default_factory=list)
    _accept: Accept | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def run(self, accept: Accept) -> None:
        self._accept = accept
        self._ready.set()
        await asyncio.Event().wait()

    async def push(
        self,
        chat: str,
        text: str,
        thread: str = "",
        sender: str = "",
        platform_id: str = "",
        attachments: tuple[Attachment, ...] = (),
        addressed: bool = True,
    ) -> Decision | None:
        """A user writes ``text`` in ``chat``; returns once the orchestrator committed it."""
        await asyncio.wait_for(self._ready.wait(), 30)
        assert self._accept is not None
        message = InboundMessage(
            address=Address(self.name, chat, thread),
            sender_id=sender or f"user{chat}",
            text=text,
            platform_id=platform_id or f"in-{next(self._ids)}",
            received_at=time.time(),
            attachments=attachments,
            addressed=addressed,
        )
        return await self._accept(message)

    async def report(self, status: DeliveryStatus) -> None:
        """The platform's later word on a message it took (as WhatsApp's webhooks give)."""
        assert self._accept is not None
        await report_status(self._accept, status)

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        self.typing_calls.append((address, message_id, active))

    def fail_next(self, chat: str, *errors: SendError) -> None:
        self.failures.setdefault(chat, []).extend(errors)

    async def send(self, message: OutboundMessage) -> str:
        now = time.monotonic()
        self.attempts.append((message, now))
        pending = self.failures.get(message.address.chat)
        if pending:
            raise pending.pop(0)
        platform_id = f"out-{next(self._ids)}"
        async with self._changed:
            self.sent.append(SentMessage(message, platform_id, now))
            self.delivered.append(message)
            self._changed.notify_all()
        return platform_id

    async def send_file(self, file: OutboundFile) -> str:
        pending = self.failures.get(file.address.chat)
        if pending:
            raise pending.pop(0)
        async with self._changed:
            self.files.append(file)
            self.delivered.append(file)
            self._changed.notify_all()
        return f"file-{next(self._ids)}"

    async def wait_files(self, count: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.files) >= count)

    def texts_to(self, chat: str) -> list[str]:
        return [s.message.text for s in self.sent if s.message.address.chat == chat]

    async def wait_sent(self, count: int, chat: str | None = None, timeout: float = 30) -> None:
        def enough() -> bool:
            matching = [s for s in self.sent if chat is None or s.message.address.chat == chat]
            return len(matching) >= count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(enough)
