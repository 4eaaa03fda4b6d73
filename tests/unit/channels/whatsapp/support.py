"""An in-process WhatsApp adapter on the fake Cloud API, and a core that records what it got."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from clawpen.channels.base import DeliveryStatus
from clawpen.channels.whatsapp import WhatsAppAdapter, WhatsAppSettings
from clawpen.errors import StoreUnavailable
from clawpen.models import CardTap, Decision, InboundMessage, Route, TapOutcome
from tests.fakes.fake_whatsapp import FakeWhatsApp
from tests.waiting import until


@dataclass
class Core:
    """The core's side of ``accept``: commits (records) each message once, dropping copies by
    platform id as the store does; ``unavailable`` makes the next commits fail."""

    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[DeliveryStatus] = field(default_factory=list)
    taps: list[CardTap] = field(default_factory=list)  # the taps it recorded
    offered: list[str] = field(default_factory=list)  # platform ids of every accept/tap call
    unavailable: int = 0  # how many accept (or tap) calls still fail
    approver: str = "15551234567"  # whose taps decide; anyone else's are "not yours"

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.offered.append(message.platform_id)
        if self.unavailable:
            self.unavailable -= 1
            raise StoreUnavailable("disk full")
        if any(m.platform_id == message.platform_id for m in self.messages):
            return None
        self.messages.append(message)
        return Route("assistant")

    async def tap(self, tap: CardTap) -> TapOutcome:
        """A card's button: decided once, by the approver; answered as the core answers."""
        self.offered.append(tap.platform_id)
        if self.unavailable:
            self.unavailable -= 1
            raise StoreUnavailable("disk full")
        self.taps.append(tap)
        if tap.sender_id != self.approver:
            return TapOutcome("Not yours to decide.", "")
        if any(t.data == tap.data and t.sender_id == self.approver for t in self.taps[:-1]):
            return TapOutcome("Already decided: allowed.", "")
        return TapOutcome("Allowed.", f"Allowed by {tap.sender_id}.")

    async def delivery_status(self, status: DeliveryStatus) -> None:
        self.statuses.append(status)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[InboundMessage]:
        await until(lambda: len(self.messages) >= count, timeout=timeout, what=f"{count} kept")
        return self.messages


@contextlib.asynccontextmanager
async def running_adapter(
    meta: FakeWhatsApp, core: Core, **settings: Any
) -> AsyncIterator[WhatsAppAdapter]:
    """The adapter serving webhooks on a free loopback port, which Meta is told to post to;
    ``settings`` added to its block."""
    adapter = WhatsAppAdapter(WhatsAppSettings.model_validate({**meta.settings(), **settings}))
    task = asyncio.create_task(adapter.run(core))
    try:

        def listening() -> bool:
            if task.done():
                task.result()  # its exception, if it failed to start
            return adapter.listening.is_set()

        await until(listening, what="the adapter listening")
        meta.webhook_url = adapter.url
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
