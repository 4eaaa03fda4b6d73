"""What the store's tests share: a routed message, leases, and a reply committed the usual way."""

from __future__ import annotations

from clawpen.models import Address, InboundMessage, Route
from clawpen.store import Lease, SQLiteStore

ROUTED = Route("assistant")
NOW = 1_000.0
ME = Lease("me", NOW + 60)
OTHER = Lease("other", NOW + 60)


def msg(
    text: str,
    chat: str = "1001",
    platform_id: str | None = None,
    channel: str = "telegram",
    thread: str = "",
) -> InboundMessage:
    return InboundMessage(
        address=Address(channel, chat, thread),
        sender_id=f"user{chat}",
        text=text,
        platform_id=platform_id or text,
        received_at=1.0,
    )


async def record(store: SQLiteStore, *messages: InboundMessage) -> None:
    for message in messages:
        await store.record_inbound(message, ROUTED, ME, NOW)


async def answered(store: SQLiteStore, text: str = "hi", reply: str = "echo: hi") -> int:
    await record(store, msg(text))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    done = await store.finish_task(task.id, reply, None, ME, NOW)
    assert done is not None
    return done.id
