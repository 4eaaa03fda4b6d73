"""Messages in: duplicates are dropped, a refusal gets its answer, strangers keep no text."""

from __future__ import annotations

import pytest

from clawpen.models import Address, InboundMessage, Rejection, Stranger
from clawpen.store import SQLiteStore

from .support import ME, NOW, ROUTED, msg, record


async def test_duplicate_platform_message_is_recorded_once(store: SQLiteStore) -> None:
    first = await store.record_inbound(msg("hi", platform_id="42"), ROUTED, ME, NOW)
    again = await store.record_inbound(msg("hi", platform_id="42"), ROUTED, ME, NOW)
    assert isinstance(first, int)
    assert again is None
    assert await store.counts() == {"messages.queued": 1, "strangers": 0}


async def test_duplicate_is_dropped_even_if_routing_changed(store: SQLiteStore) -> None:
    await store.record_inbound(msg("hi", platform_id="42"), ROUTED, ME, NOW)
    refused = Rejection("too long", answer="too long")
    assert await store.record_inbound(msg("hi", platform_id="42"), refused, ME, NOW) is None
    assert (await store.counts())["messages.queued"] == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(msg("hi", chat="2002", platform_id="42"), id="same_id_other_chat"),
        pytest.param(msg("hi", channel="cli", platform_id="42"), id="same_id_other_channel"),
    ],
)
async def test_same_platform_id_elsewhere_is_a_different_message(
    store: SQLiteStore, other: InboundMessage
) -> None:
    await record(store, msg("hi", platform_id="42"))
    assert await store.record_inbound(other, ROUTED, ME, NOW) is not None
    assert (await store.counts())["messages.queued"] == 2


async def test_refused_message_gets_its_answer_as_a_pending_reply(store: SQLiteStore) -> None:
    refusal = Rejection("too long", answer="Please send it in parts.")
    await store.record_inbound(msg("x" * 50, platform_id="9"), refusal, ME, NOW)
    assert await store.claim_next_task("assistant", ME, NOW) is None
    [reply] = await store.pending_replies("telegram")
    assert reply.text == "Please send it in parts."
    assert reply.reply_to == "9"
    assert reply.owner == "me"


async def test_strangers_are_kept_without_their_text_and_expire(store: SQLiteStore) -> None:
    address = Address("telegram", "666")
    await store.record_stranger(Stranger(address, "u666", 12, received_at=10.0))
    await store.record_stranger(Stranger(address, "u666", 5, received_at=20.0))
    assert (await store.counts())["strangers"] == 2
    assert await store.expire_strangers(before=15.0) == 1
    assert (await store.counts())["strangers"] == 1
