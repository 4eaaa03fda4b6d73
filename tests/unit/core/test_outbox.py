"""Delivering replies: in order within a chat, chats independent of each other, retried until
sent, sent once, paced below the platform's limits, given up on when hopeless."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clawpen.channels.base import RateLimitSettings, SendError
from clawpen.core.outbox import MAX_ATTEMPTS, Outbox, plan
from clawpen.models import Address, InboundMessage, Reply, Route
from clawpen.obs.metrics import Metrics
from clawpen.store import Lease, SQLiteStore
from tests.fakes.fake_channel import MemoryChannel
from tests.waiting import until

UNLIMITED = RateLimitSettings(per_chat=0, overall=0)
OWNER = "me"

# -- pure decisions ----------------------------------------------------------------------------


def pending(
    id: int,
    chat: str,
    due: float = 0.0,
    owner: str | None = OWNER,
    lease_until: float = 200.0,
    stranger: bool = False,
) -> Reply:
    return Reply(
        id=id,
        task_id=id,
        address=Address("telegram", chat),
        text=f"reply {id}",
        next_attempt_at=due,
        owner=owner,
        lease_until=lease_until,
        stranger=stranger,
    )


@pytest.mark.parametrize(
    ("replies", "busy", "start", "wake_at"),
    [
        pytest.param([], set(), [], None, id="nothing_pending"),
        pytest.param(
            [pending(1, "a"), pending(2, "a"), pending(3, "b")],
            set(),
            [1, 3],
            None,
            id="oldest_of_each_chat",
        ),
        pytest.param(
            [pending(1, "a", due=150), pending(2, "a"), pending(3, "b")],
            set(),
            [3],
            150,
            id="a_chat_waiting_out_a_429_keeps_its_order_and_others_go",
        ),
        pytest.param(
            [pending(1, "a"), pending(2, "b")],
            {"telegram:a"},
            [2],
            None,
            id="a_chat_with_a_delivery_under_way_is_left_alone",
        ),
        pytest.param(
            [pending(1, "a", owner="other", lease_until=130), pending(2, "b", owner=None)],
            set(),
            [2],
            130,
            id="another_owners_live_lease_is_respected_until_it_ends",
        ),
        pytest.param(
            [pending(1, "a", owner="other", lease_until=90)],
            set(),
            [1],
            None,
            id="an_expired_lease_is_free_to_take",
        ),
        pytest.param(
            [pending(1, "a", due=120), pending(2, "b", due=110)],
            set(),
            [],
            110,
            id="wakes_for_the_earliest_due",
        ),
        pytest.param(
            [pending(1, "s1", stranger=True), pending(2, "s2", stranger=True), pending(3, "a")],
            set(),
            [3, 1, 2],
            None,
            id="paired_chats_go_before_strangers",
        ),
    ],
)
def test_plan_table(
    replies: list[Reply], busy: set[str], start: list[int], wake_at: float | None
) -> None:
    decided = plan(replies, 100.0, busy, OWNER)
    assert [r.id for r in decided.start] == start
    assert decided.wake_at == wake_at


# -- delivery through a store and a channel ------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "clawpen.db")
    yield s
    await s.close()


def lease() -> Lease:
    import time

    return Lease(OWNER, time.time() + 60)


async def commit_reply(store: SQLiteStore, text: str = "echo: hi", chat: str = "1001") -> Reply:
    """A reply as the worker leaves it: message recorded, claimed, task finished."""
    message = InboundMessage(Address("telegram", chat), "u1", "hi", f"p-{text}-{chat}", 1.0)
    await store.record_inbound(message, Route("assistant"), lease(), 1.0)
    task = await store.claim_next_task("assistant", lease(), 1.0)
    assert task is not None
    reply = await store.finish_task(task.id, text, None, lease(), 1.0)
    assert reply is not None
    return reply


def make_outbox(
    store: SQLiteStore, channel: MemoryChannel, limits: RateLimitSettings = UNLIMITED
) -> Outbox:
    return Outbox(store, {"telegram": channel}, {"telegram": limits}, Metrics(), lease)


@contextlib.asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[Outbox]:
    worker = asyncio.create_task(outbox.run("telegram"))
    try:
        yield outbox
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def transient(retry_after: float = 0) -> SendError:
    return SendError("429: Too Many Requests", retry_after=retry_after)


async def all_sent(store: SQLiteStore) -> None:
    """Until the store has recorded every delivery (it commits just after the send)."""

    async def none_pending() -> bool:
        return not await store.pending_replies("telegram")

    await until(none_pending, what="every reply recorded as sent or failed")


async def status_of(store: SQLiteStore, reply_id: int) -> tuple[str, int, int]:
    [reply] = [r for r in await store.replies_for(Address("telegram", "1001")) if r.id == reply_id]
    row = sqlite3.connect(store.path).execute("SELECT status FROM replies WHERE id=?", (reply_id,))
    return row.fetchone()[0], reply.attempts, reply.chunks_sent


async def test_reply_is_delivered_once_after_transient_failures(store: SQLiteStore) -> None:
    channel = MemoryChannel()
    channel.fail_next("1001", transient(), SendError("502 Bad Gateway", retry_after=0))
    reply = await commit_reply(store)
    outbox = make_outbox(store, channel)
    async with running(outbox):
        await all_sent(store)
    assert channel.texts_to("1001") == ["echo: hi"]
    assert len(channel.attempts) == 3
    assert await status_of(store, reply.id) == ("sent", 2, 1)
    metrics = outbox.metrics.registry
    assert (
        metrics.get_sample_value(
            "clawpen_replies_total", {"channel": "telegram", "outcome": "error"}
        )
        == 2
    )


async def test_permanent_failure_is_not_retried(store: SQLiteStore) -> None:
    channel = MemoryChannel()
    channel.fail_next("1001", SendError("Forbidden: bot was blocked", permanent=True))
    reply = await commit_reply(store)
    assert await make_outbox(store, channel).deliver(reply) is False
    assert len(channel.attempts) == 1
    assert await store.pending_replies("telegram") == []
    assert (await status_of(store, reply.id))[0] == "failed"


async def test_reply_is_given_up_after_max_attempts(store: SQLiteStore) -> None:
    channel = MemoryChannel()
    channel.fail_next("1001", *[transient() for _ in range(MAX_ATTEMPTS + 5)])
    reply = await commit_reply(store)
    async with running(make_outbox(store, channel)):
        await all_sent(store)
    assert len(channel.attempts) == MAX_ATTEMPTS
    assert (await status_of(store, reply.id))[0] == "failed"


async def test_long_reply_is_sent_in_chunks_in_order(store: SQLiteStore) -> None:
    channel = MemoryChannel(max_message_length=10)
    reply = await commit_reply(store, "first one\nsecond one\nthird")
    assert await make_outbox(store, channel).deliver(reply) is True
    assert channel.texts_to("1001") == ["first one", "second one", "third"]
    assert await status_of(store, reply.id) == ("sent", 0, 3)


async def test_failed_chunk_is_retried_without_resending_earlier_chunks(
    store: SQLiteStore,
) -> None:
    channel = MemoryChannel(max_message_length=10)
    reply = await commit_reply(store, "aaaaaaaaaabbbbbbbbbbcc")
    outbox = make_outbox(store, channel)
    original = channel.send
    failed: list[str] = []

    async def fail_second_chunk_once(message: object) -> str:
        text = message.text  # type: ignore[attr-defined]
        if text.startswith("b") and not failed:
            failed.append(text)
            raise transient()
        return await original(message)  # type: ignore[arg-type]

    channel.send = fail_second_chunk_once  # type: ignore[method-assign,assignment]
    async with running(outbox):
        await all_sent(store)
    assert channel.texts_to("1001") == ["a" * 10, "b" * 10, "cc"]
    assert await status_of(store, reply.id) == ("sent", 1, 3)


async def test_restart_resumes_with_the_next_unsent_chunk(tmp_path: Path) -> None:
    before = SQLiteStore(tmp_path / "clawpen.db")
    reply = await commit_reply(before, "aaaaaaaaaabbbbbbbbbbcc")
    stalled = MemoryChannel(max_message_length=10)
    original = stalled.send

    async def stall_on_second_chunk(message: object) -> str:
        if message.text.startswith("b"):  # type: ignore[attr-defined]
            await asyncio.Event().wait()  # the orchestrator is stopped while this hangs
        return await original(message)  # type: ignore[arg-type]

    stalled.send = stall_on_second_chunk  # type: ignore[method-assign,assignment]
    delivery = asyncio.create_task(make_outbox(before, stalled).deliver(reply))
    await stalled.wait_sent(1)

    async def first_chunk_recorded() -> bool:
        return (await status_of(before, reply.id))[2] == 1

    await until(first_chunk_recorded, what="the first chunk recorded as sent")
    delivery.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await delivery
    await before.close()

    after = SQLiteStore(tmp_path / "clawpen.db")
    try:
        await after.release_leases()
        channel = MemoryChannel(max_message_length=10)
        async with running(make_outbox(after, channel)):
            await all_sent(after)
        assert channel.texts_to("1001") == ["b" * 10, "cc"]  # "a..." is not repeated
        assert await after.pending_replies("telegram") == []
    finally:
        await after.close()


async def test_outbox_worker_delivers_replies_left_from_before_a_restart(tmp_path: Path) -> None:
    before = SQLiteStore(tmp_path / "clawpen.db")
    await commit_reply(before, "first", chat="1")
    await commit_reply(before, "second", chat="2")
    await before.close()

    after = SQLiteStore(tmp_path / "clawpen.db")
    await after.release_leases()
    channel = MemoryChannel()
    outbox = make_outbox(after, channel)
    try:
        async with running(outbox):
            await channel.wait_sent(2)
            await commit_reply(after, "third", chat="3")  # a new reply wakes the worker
            outbox.notify("telegram")
            await channel.wait_sent(3)
        assert sorted(s.message.text for s in channel.sent) == ["first", "second", "third"]
    finally:
        await after.close()


async def test_attempts_left_carry_over_a_restart(store: SQLiteStore) -> None:
    reply = await commit_reply(store)
    for attempt in range(MAX_ATTEMPTS - 1):
        assert await store.claim_reply(reply.id, 0, lease(), f"d{attempt}", 0)
        await store.record_send_failure(reply.id, f"d{attempt}", "503", False, next_attempt_at=0)
    [left] = await store.pending_replies("telegram")
    channel = MemoryChannel()
    channel.fail_next("1001", transient(), transient(), transient())
    assert await make_outbox(store, channel).deliver(left) is False
    assert len(channel.attempts) == 1  # only the last attempt was left
    assert (await status_of(store, reply.id))[0] == "failed"


async def test_a_chat_held_by_429s_does_not_hold_up_another_chat(store: SQLiteStore) -> None:
    channel = MemoryChannel()
    channel.fail_next("1", transient(retry_after=2.0))
    await commit_reply(store, "held 1", chat="1")
    await commit_reply(store, "held 2", chat="1")
    for i in range(3):
        await commit_reply(store, f"free {i}", chat="2")
    async with running(make_outbox(store, channel)):
        async with asyncio.timeout(1.0):  # the other chat gets its replies at once
            await channel.wait_sent(3, chat="2")
        assert channel.texts_to("1") == []
        await channel.wait_sent(2, chat="1", timeout=10)
    assert channel.texts_to("2") == ["free 0", "free 1", "free 2"]
    assert channel.texts_to("1") == ["held 1", "held 2"]  # the order within a chat is kept
    [first_try] = [t for m, t in channel.attempts if m.text == "held 1"][:1]
    held = next(s.at for s in channel.sent if s.message.text == "held 1")
    assert held - first_try >= 1.9  # the platform's wait was honoured


async def test_sends_are_paced_per_chat_before_the_platform_must_refuse(
    store: SQLiteStore,
) -> None:
    channel = MemoryChannel()
    limits = RateLimitSettings(per_chat=5, per_chat_burst=1, overall=100, overall_burst=100)
    for i in range(4):
        await commit_reply(store, f"slow {i}", chat="1")
    await commit_reply(store, "other", chat="2")
    async with running(make_outbox(store, channel, limits)):
        await channel.wait_sent(4, chat="1")
    times = [s.at for s in channel.sent if s.message.address.chat == "1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.18  # 5 per second, one at a time
    other = next(s.at for s in channel.sent if s.message.address.chat == "2")
    assert other - times[0] < 0.15  # another chat has its own allowance


async def test_pairing_codes_for_a_crowd_of_strangers_never_delay_a_paired_chat(
    store: SQLiteStore,
) -> None:
    """Issue 23, item 9: 1,500 new chats made a paired reply 48 s late."""
    for n in range(60):
        stranger = InboundMessage(Address("telegram", f"s{n}"), f"u{n}", "hi", f"p{n}", 1.0)
        code = f"code {n}"
        assert await store.offer_pairing_code(stranger, code, code, lease(), 1.0, 600, 600)
    await commit_reply(store, "paired answer", chat="1001")  # the newest of all
    limits = RateLimitSettings(per_chat=0, overall=20, overall_burst=5, strangers=2)
    channel = MemoryChannel()
    async with running(make_outbox(store, channel, limits)):
        await channel.wait_sent(1, chat="1001", timeout=10)
        await channel.wait_sent(3)  # strangers still get their codes, on their own budget
    chats = [s.message.address.chat for s in channel.sent]
    assert chats.index("1001") == 0
