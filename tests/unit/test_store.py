"""The store: what it commits survives a reopen, duplicates are dropped, tasks batch by
conversation, claimed work has one owner at a time, and a bad write fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clawpen.models import Address, InboundMessage, Rejection, Route, Stranger
from clawpen.store import Lease, SQLiteStore, StoreRejected, StoreUnavailable
from clawpen.store.migrations import MIGRATIONS

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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "clawpen.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    yield s
    await s.close()


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


# -- inbound ---------------------------------------------------------------------------------


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


# -- tasks -----------------------------------------------------------------------------------


async def test_queued_messages_of_one_conversation_batch_into_one_task_in_order(
    store: SQLiteStore,
) -> None:
    await record(
        store,
        msg("first"),
        msg("other chat", chat="2002"),
        msg("in a thread", thread="t1"),
        msg("second"),
        msg("third"),
    )
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    assert task.address == Address("telegram", "1001")
    assert task.texts == ("first", "second", "third")
    assert task.senders == ("user1001",) * 3
    assert task.attempts == 1
    assert task.reply_to == "third"
    assert not task.resumed

    other = await store.claim_next_task("assistant", ME, NOW)
    assert other is not None
    assert (other.address.chat, other.texts) == ("2002", ("other chat",))
    threaded = await store.claim_next_task("assistant", ME, NOW)
    assert threaded is not None
    assert threaded.address == Address("telegram", "1001", "t1")
    assert await store.claim_next_task("assistant", ME, NOW) is None


async def test_message_arriving_during_a_task_goes_into_the_next_task(store: SQLiteStore) -> None:
    await record(store, msg("first"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    await record(store, msg("while busy"))
    nxt = await store.claim_next_task("assistant", ME, NOW)
    assert nxt is not None
    assert (task.texts, nxt.texts) == (("first",), ("while busy",))


async def test_tasks_are_per_agent(store: SQLiteStore) -> None:
    await store.record_inbound(msg("for coder", chat="coder", channel="cli"), Route("coder"), ME, 1)
    assert await store.claim_next_task("assistant", ME, NOW) is None
    task = await store.claim_next_task("coder", ME, NOW)
    assert task is not None
    assert task.agent_id == "coder"


async def test_finish_task_commits_exactly_one_reply(store: SQLiteStore) -> None:
    await record(store, msg("hi"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    reply = await store.finish_task(task.id, "echo: hi", None, ME, NOW)
    again = await store.finish_task(task.id, "a second answer", None, ME, NOW)
    assert reply is not None
    assert again is None  # finished already: nothing more is sent
    assert (reply.address, reply.task_id, reply.text) == (task.address, task.id, "echo: hi")
    assert await store.pending_replies("telegram") == [reply]
    assert await store.counts() == {
        "messages.answered": 1,
        "tasks.done": 1,
        "replies.pending": 1,
        "strangers": 0,
    }


async def test_failed_task_still_gets_a_reply(store: SQLiteStore) -> None:
    await record(store, msg("hi"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    reply = await store.finish_task(task.id, "Sorry", "timeout", ME, NOW)
    assert reply is not None
    assert reply.text == "Sorry"
    assert (await store.counts())["tasks.failed"] == 1


async def test_a_leased_task_is_not_claimed_by_another_owner(store: SQLiteStore) -> None:
    await record(store, msg("hi"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    assert await store.claim_next_task("assistant", OTHER, NOW + 30) is None
    assert await store.finish_task(task.id, "not mine", None, OTHER, NOW) is None


async def test_a_task_whose_lease_ran_out_is_resumed_once_and_the_resume_counted(
    store: SQLiteStore,
) -> None:
    await record(store, msg("hi"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    later = NOW + 61  # the owner died: it renewed nothing
    resumed = await store.claim_next_task("assistant", Lease("other", later + 60), later)
    assert resumed is not None
    assert (resumed.id, resumed.texts, resumed.resumes, resumed.resumed) == (
        task.id,
        ("hi",),
        1,
        True,
    )
    assert await store.claim_next_task("assistant", Lease("third", later + 60), later) is None


async def test_renewed_leases_keep_work_with_its_owner(store: SQLiteStore) -> None:
    await record(store, msg("hi"))
    await store.claim_next_task("assistant", ME, NOW)
    await store.renew_leases(Lease("me", NOW + 600))
    assert await store.claim_next_task("assistant", OTHER, NOW + 100) is None


async def test_released_leases_let_a_restart_resume_at_once(db_path: Path) -> None:
    before = SQLiteStore(db_path)
    await record(before, msg("hello"), msg("again"))
    task = await before.claim_next_task("assistant", ME, NOW)
    await before.close()  # the orchestrator dies mid-task

    after = SQLiteStore(db_path)
    try:
        assert await after.claim_next_task("assistant", OTHER, NOW) is None  # lease still runs
        assert await after.release_leases() == 1  # a sole owner knows the old one is dead
        resumed = await after.claim_next_task("assistant", OTHER, NOW)
        assert resumed is not None and task is not None
        assert (resumed.id, resumed.texts, resumed.resumes) == (task.id, task.texts, 1)
    finally:
        await after.close()


async def test_a_task_handed_back_at_shutdown_does_not_count_a_resume(
    store: SQLiteStore,
) -> None:
    await record(store, msg("hi"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    await store.release_task(task.id, "me")
    again = await store.claim_next_task("assistant", OTHER, NOW)
    assert again is not None
    assert (again.id, again.resumes) == (task.id, 0)


async def test_retry_counts_attempts(store: SQLiteStore) -> None:
    await record(store, msg("hi"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    assert await store.retry_task(task.id, ME) == 2
    assert await store.retry_task(task.id, ME) == 3


# -- replies ---------------------------------------------------------------------------------


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


# -- transactions ----------------------------------------------------------------------------


async def test_concurrent_writes_commit_together_in_the_order_they_were_asked(
    store: SQLiteStore, db_path: Path
) -> None:
    ids = await asyncio.gather(
        *(store.record_inbound(msg(f"m{i}", chat=str(i % 3)), ROUTED, ME, NOW) for i in range(300))
    )
    assert ids == sorted(ids)  # committed in the order asked, whatever the batching
    assert len(set(ids)) == 300
    raw = sqlite3.connect(db_path)
    texts = [r[0] for r in raw.execute("SELECT text FROM messages ORDER BY id")]
    raw.close()
    assert texts == [f"m{i}" for i in range(300)]


async def test_a_write_the_database_refuses_fails_alone_and_is_not_retried(
    store: SQLiteStore,
) -> None:
    good = store.record_inbound(msg("good"), ROUTED, ME, NOW)
    bad = store.record_inbound(msg(["a"]), ROUTED, ME, NOW)  # type: ignore[arg-type]
    surrogate = store.record_inbound(msg("\ud800", platform_id="s"), ROUTED, ME, NOW)
    after = store.record_inbound(msg("after"), ROUTED, ME, NOW)
    results = await asyncio.gather(good, bad, surrogate, after, return_exceptions=True)
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert isinstance(results[1], StoreRejected)
    assert isinstance(results[2], StoreRejected)
    assert "refused a write" in str(results[1])
    assert (await store.counts())["messages.queued"] == 2


async def test_a_locked_database_is_unavailable_not_refused(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    blocker = sqlite3.connect(db_path, timeout=0.1)
    blocker.execute("PRAGMA busy_timeout=0")
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        store._writer.db.execute("PRAGMA busy_timeout=50")
        with pytest.raises(StoreUnavailable, match="retries"):
            await store.record_inbound(msg("hi"), ROUTED, ME, NOW)
        blocker.execute("ROLLBACK")
        assert await store.record_inbound(msg("hi"), ROUTED, ME, NOW) is not None
    finally:
        blocker.close()
        await store.close()


# -- files -------------------------------------------------------------------------------------


async def test_database_is_in_wal_mode(store: SQLiteStore, db_path: Path) -> None:
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        other.close()


async def test_reopening_does_not_rerun_migrations(db_path: Path) -> None:
    await SQLiteStore(db_path).close()
    again = SQLiteStore(db_path)
    await again.close()


async def test_a_store_from_before_addresses_keeps_its_work_and_drops_strangers_text(
    db_path: Path,
) -> None:
    old = sqlite3.connect(db_path, isolation_level=None)
    for script in MIGRATIONS[:4]:
        old.executescript(script)
    old.execute("PRAGMA user_version=4")
    old.execute(
        "INSERT INTO messages (channel, chat_id, sender_id, platform_id, text, received_at,"
        " status, agent_id) VALUES ('telegram', '1001', 'u', '5', 'queued one', 1, 'queued',"
        " 'assistant')"
    )
    old.execute(
        "INSERT INTO messages (channel, chat_id, sender_id, platform_id, text, received_at,"
        " status, reason) VALUES ('telegram', '666', 'x', '6', 'secret text', 2, 'rejected',"
        " 'not paired')"
    )
    old.close()
    store = SQLiteStore(db_path)
    try:
        task = await store.claim_next_task("assistant", ME, NOW)
        assert task is not None
        assert task.texts == ("queued one",)
        assert (await store.counts())["strangers"] == 1
    finally:
        await store.close()
    raw = sqlite3.connect(db_path)
    assert "secret text" not in [r[0] for r in raw.execute("SELECT text FROM messages")]
    raw.close()


async def test_config_pairings_are_restored_at_start_and_runtime_pairings_kept(
    db_path: Path,
) -> None:
    store = SQLiteStore(db_path)
    await store.sync_config_pairings({"telegram:1": "assistant"}, NOW)
    await store.pair("telegram:2", "helper", NOW)
    await store.unpair("telegram:1")
    assert await store.pairings() == {"telegram:2": "helper"}
    await store.close()
    reopened = SQLiteStore(db_path)
    await reopened.sync_config_pairings({"telegram:1": "assistant"}, NOW)  # the next start
    assert await reopened.pairings() == {"telegram:1": "assistant", "telegram:2": "helper"}
    await reopened.close()
