"""The outbox: a reply stays pending until every chunk is sent, survives a reopen, and a stale
read never claims a chunk again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clawpen.models import Address, DeliveryStatus
from clawpen.store import Lease, SQLiteStore

from .support import ME, NOW, OTHER, answered, msg, record


async def test_pending_reply_survives_reopen_until_sent(db_path: Path) -> None:
    first = SQLiteStore(db_path)
    reply_id = await answered(first)
    await first.close()

    second = SQLiteStore(db_path)
    [pending] = await second.pending_replies("telegram")
    assert (pending.id, pending.text) == (reply_id, "echo: hi")
    assert await second.claim_reply(reply_id, 0, ME, "d1", NOW)
    assert await second.record_chunk_sent(reply_id, "d1", 0, "77", done=True, now=NOW)
    await second.close()

    third = SQLiteStore(db_path)
    try:
        assert await third.pending_replies("telegram") == []
        [sent] = await third.replies_for(Address("telegram", "1001"))
        assert (sent.chunks_sent, sent.owner) == (1, None)
    finally:
        await third.close()


async def test_partly_sent_reply_stays_pending_and_remembers_its_chunks(db_path: Path) -> None:
    first = SQLiteStore(db_path)
    reply_id = await answered(first, reply="a long answer in chunks")
    assert await first.claim_reply(reply_id, 0, ME, "d1", NOW)
    assert await first.record_chunk_sent(reply_id, "d1", 0, "10", done=False, now=NOW)
    assert await first.record_chunk_sent(reply_id, "d1", 1, "11", done=False, now=NOW)
    await first.close()

    second = SQLiteStore(db_path)
    try:
        await second.release_leases()  # a restart: the dead delivery's claim ends with it
        [pending] = await second.pending_replies("telegram")
        assert pending.chunks_sent == 2
        assert await second.claim_reply(reply_id, 2, ME, "d2", NOW)
        assert await second.record_chunk_sent(reply_id, "d2", 2, "12", done=True, now=NOW)
        assert await second.pending_replies("telegram") == []
    finally:
        await second.close()
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT platform_ids FROM replies").fetchone()[0] == "10,11,12"
    raw.close()


async def test_pending_replies_are_read_per_channel(store: SQLiteStore) -> None:
    for channel, chat in [("telegram", "1"), ("cli", "assistant")]:
        await record(store, msg("hi", chat=chat, channel=channel))
        task = await store.claim_next_task("assistant", ME, NOW)
        assert task is not None
        await store.finish_task(task.id, f"to {channel}", None, ME, NOW)
    assert [r.text for r in await store.pending_replies("cli")] == ["to cli"]
    assert [r.text for r in await store.pending_replies("telegram")] == ["to telegram"]


async def test_failed_delivery_is_due_again_later_until_final(store: SQLiteStore) -> None:
    reply_id = await answered(store)
    assert await store.claim_reply(reply_id, 0, ME, "d1", NOW)
    await store.record_send_failure(reply_id, "d1", "429", final=False, next_attempt_at=NOW + 10)
    [pending] = await store.pending_replies("telegram")
    assert (pending.attempts, pending.next_attempt_at) == (1, NOW + 10)
    assert await store.claim_reply(reply_id, 0, ME, "d2", NOW)
    await store.record_send_failure(reply_id, "d2", "403", final=True, next_attempt_at=NOW)
    assert await store.pending_replies("telegram") == []
    assert (await store.counts())["replies.failed"] == 1


async def test_a_reply_leased_by_another_owner_is_not_taken_until_its_lease_ends(
    store: SQLiteStore,
) -> None:
    reply_id = await answered(store)  # leased to "me" until NOW + 60
    assert not await store.claim_reply(reply_id, 0, OTHER, "theirs", NOW + 1)
    assert await store.claim_reply(reply_id, 0, Lease("other", NOW + 200), "theirs", NOW + 61)
    assert not await store.claim_reply(reply_id, 0, ME, "mine", NOW + 62)


async def test_a_stale_read_can_never_claim_a_chunk_again(store: SQLiteStore) -> None:
    reply_id = await answered(store, reply="two chunks")
    assert await store.claim_reply(reply_id, 0, ME, "first", NOW)
    # a second delivery of the same owner, from the same read, while the first holds it
    assert not await store.claim_reply(reply_id, 0, ME, "second", NOW)
    assert await store.record_chunk_sent(reply_id, "first", 0, "10", done=False, now=NOW)
    await store.release_reply(reply_id, "first")
    # the first delivery ended; a delivery from the stale row (chunk 0) gets nothing
    assert not await store.claim_reply(reply_id, 0, ME, "stale", NOW)
    assert not await store.record_chunk_sent(reply_id, "stale", 0, "10", done=False, now=NOW)
    assert await store.claim_reply(reply_id, 1, ME, "fresh", NOW)
    assert await store.record_chunk_sent(reply_id, "fresh", 1, "11", done=True, now=NOW)
    # sent: no claim at any chunk, and a late record changes nothing
    assert not await store.claim_reply(reply_id, 1, ME, "late", NOW)
    assert not await store.record_chunk_sent(reply_id, "fresh", 1, "11", done=True, now=NOW)
    [sent] = await store.replies_for(Address("telegram", "1001"))
    assert sent.chunks_sent == 2


async def test_the_dashboard_shows_an_undelivered_answer_as_status_counts_it(
    store: SQLiteStore,
) -> None:
    """`status` counts a failed reply as undelivered; the dashboard's message list agrees
    rather than showing the message "answered"."""
    delivered = await answered(store, "first", "echo: first")
    assert await store.claim_reply(delivered, 0, ME, "d1", NOW)
    assert await store.record_chunk_sent(delivered, "d1", 0, "1", done=True, now=NOW)
    lost = await answered(store, "second", "echo: second")
    assert await store.claim_reply(lost, 0, ME, "d2", NOW)
    await store.record_send_failure(lost, "d2", "the bot was blocked", True, NOW)
    waiting = await answered(store, "third", "echo: third")

    shown = {m.text: m.status for m in await store.recent_messages(10)}
    assert shown == {"first": "answered", "second": "undelivered", "third": "replying"}
    assert (await store.delivery_failures(0))["telegram"][0] == 1
    assert waiting
    # the platform says later that the first one failed (a WhatsApp status)
    await store.record_delivery_status(
        "telegram", DeliveryStatus("1001", "1", "failed", "window closed", True), NOW
    )
    shown = {m.text: m.status for m in await store.recent_messages(10)}
    assert shown["first"] == "undelivered"
    assert (await store.delivery_failures(0))["telegram"][0] == 2


async def test_a_reply_no_chat_session_took_is_kept_unread_once_for_that_conversation(
    store: SQLiteStore,
) -> None:
    address = Address("cli", "assistant", "s1")
    await record(store, msg("run: sleep 20", chat="assistant", channel="cli", thread="s1"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    done = await store.finish_task(task.id, "slept", None, ME, NOW)
    assert done is not None
    [reply] = await store.pending_replies("cli")
    assert await store.claim_reply(reply.id, 0, ME, "d1", NOW)
    assert await store.record_chunk_sent(reply.id, "d1", 0, "unread:ab12", done=True, now=NOW)

    assert await store.take_unread(Address("cli", "assistant", "other")) == []
    assert await store.take_unread(address) == ["slept"]
    assert await store.take_unread(address) == []  # shown once
