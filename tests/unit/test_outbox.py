"""Delivering replies: retried with backoff until sent, sent once, given up on when hopeless."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawpen.channels.base import Accept, SendError
from clawpen.metrics import Metrics
from clawpen.models import InboundMessage, Reply, Route
from clawpen.outbox import MAX_ATTEMPTS, Outbox, backoff, split_text
from clawpen.store import Store

# -- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "retry_after", "rand", "expected"),
    [
        pytest.param(0, None, 1.0, 0.5, id="first_retry_at_most_half_a_second"),
        pytest.param(1, None, 1.0, 1.0, id="doubles"),
        pytest.param(3, None, 1.0, 4.0, id="exponential"),
        pytest.param(6, None, 1.0, 32.0, id="below_cap"),
        pytest.param(7, None, 1.0, 60.0, id="capped_at_a_minute"),
        pytest.param(100, None, 1.0, 60.0, id="stays_capped"),
        pytest.param(3, None, 0.0, 0.0, id="full_jitter_low_end"),
        pytest.param(3, None, 0.25, 1.0, id="full_jitter_scales_the_cap"),
        pytest.param(0, 3.0, 0.5, 3.0, id="retry_after_honoured"),
        pytest.param(7, 0.0, 1.0, 0.0, id="retry_after_zero_honoured"),
        pytest.param(0, 300.0, 1.0, 300.0, id="platform_wait_beyond_cap_honoured"),
    ],
)
def test_backoff_table(
    attempt: int, retry_after: float | None, rand: float, expected: float
) -> None:
    assert backoff(attempt, retry_after, rand) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [0, 2, 5, 10])
def test_backoff_without_rand_is_jittered_within_the_cap(attempt: int) -> None:
    cap = min(60.0, 0.5 * 2**attempt)
    delays = [backoff(attempt) for _ in range(200)]
    assert all(0 <= d <= cap for d in delays)
    assert len(set(delays)) > 1  # jitter: retries of many replies do not line up


# -- delivery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("short", 10, ["short"], id="fits"),
        pytest.param("", 10, [""], id="empty"),
        pytest.param("abcdefghij", 10, ["abcdefghij"], id="exactly_the_limit"),
        pytest.param("abcdefghijkl", 5, ["abcde", "fghij", "kl"], id="hard_cut_without_lines"),
        pytest.param("line one\nline two", 12, ["line one", "line two"], id="cut_at_line_end"),
        pytest.param("ab\ncdefghijkl", 10, ["ab\ncdefghi", "jkl"], id="early_newline_ignored"),
    ],
)
def test_split_text_table(text: str, limit: int, expected: list[str]) -> None:
    chunks = split_text(text, limit)
    assert chunks == expected
    assert all(len(c) <= limit for c in chunks)


class ScriptedChannel:
    """A Channel whose sends fail with the given errors, in order, then succeed."""

    name = "telegram"

    def __init__(
        self, failures: list[SendError] | None = None, max_message_length: int = 4096
    ) -> None:
        self.max_message_length = max_message_length
        self.failures = list(failures or [])
        self.attempts: list[tuple[str, str]] = []
        self.delivered: list[tuple[str, str]] = []

    async def run(self, accept: Accept) -> None:  # pragma: no cover - not used here
        raise NotImplementedError

    async def send(self, chat_id: str, text: str) -> str:
        self.attempts.append((chat_id, text))
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append((chat_id, text))
        return f"m{len(self.delivered)}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "clawpen.db")
    yield s
    s.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def committed_reply(store: Store, text: str = "echo: hi", chat_id: str = "1001") -> Reply:
    """A reply as the dispatcher leaves it: message recorded, claimed, task finished."""
    message = InboundMessage("telegram", chat_id, "u1", "hi", f"p-{text}", 1.0)
    store.record_inbound(message, Route("assistant"))
    task = store.claim_next_task("assistant")
    assert task is not None
    return store.finish_task(task.id, text)


def replies_counted(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "clawpen_replies_total", {"channel": "telegram", "outcome": outcome}
    )
    return value or 0.0


def transient() -> SendError:
    return SendError("429: Too Many Requests", retry_after=0)


async def test_reply_is_delivered_once_after_transient_failures(
    store: Store, metrics: Metrics
) -> None:
    channel = ScriptedChannel([transient(), transient()])
    reply = committed_reply(store)

    assert await Outbox(store, {"telegram": channel}, metrics).deliver(reply) is True

    assert channel.delivered == [("1001", "echo: hi")]
    assert len(channel.attempts) == 3
    assert store.pending_replies() == []
    assert store.counts()["replies.sent"] == 1
    [stored] = store.replies_for("telegram", "1001")
    assert (stored.attempts, stored.chunks_sent) == (2, 1)
    assert replies_counted(metrics, "error") == 2
    assert replies_counted(metrics, "sent") == 1


async def test_permanent_failure_is_not_retried(store: Store, metrics: Metrics) -> None:
    channel = ScriptedChannel([SendError("Forbidden: bot was blocked", permanent=True)])
    reply = committed_reply(store)

    assert await Outbox(store, {"telegram": channel}, metrics).deliver(reply) is False

    assert len(channel.attempts) == 1
    assert channel.delivered == []
    assert store.pending_replies() == []
    assert store.counts()["replies.failed"] == 1
    row = store.db.execute("SELECT error FROM replies WHERE id=?", (reply.id,)).fetchone()
    assert "blocked" in row[0]


async def test_reply_is_given_up_after_max_attempts(store: Store, metrics: Metrics) -> None:
    channel = ScriptedChannel([transient()] * (MAX_ATTEMPTS + 5))
    reply = committed_reply(store)

    assert await Outbox(store, {"telegram": channel}, metrics).deliver(reply) is False

    assert len(channel.attempts) == MAX_ATTEMPTS
    assert store.counts()["replies.failed"] == 1


async def test_long_reply_is_sent_in_chunks_in_order(store: Store, metrics: Metrics) -> None:
    channel = ScriptedChannel(max_message_length=10)
    reply = committed_reply(store, "first one\nsecond one\nthird")

    assert await Outbox(store, {"telegram": channel}, metrics).deliver(reply) is True

    assert [t for _, t in channel.delivered] == ["first one", "second one", "third"]
    row = store.db.execute("SELECT platform_ids, status FROM replies").fetchone()
    assert tuple(row) == ("m1,m2,m3", "sent")


async def test_failed_chunk_is_retried_without_resending_earlier_chunks(
    store: Store, metrics: Metrics
) -> None:
    channel = ScriptedChannel(max_message_length=10)
    reply = committed_reply(store, "aaaaaaaaaabbbbbbbbbbcc")
    original_send = channel.send

    async def fail_second_chunk_once(chat_id: str, text: str) -> str:
        if text.startswith("b") and not any(t.startswith("b") for _, t in channel.attempts):
            channel.attempts.append((chat_id, text))
            raise transient()
        return await original_send(chat_id, text)

    channel.send = fail_second_chunk_once  # type: ignore[method-assign]
    assert await Outbox(store, {"telegram": channel}, metrics).deliver(reply) is True
    assert [t for _, t in channel.delivered] == ["a" * 10, "b" * 10, "cc"]


async def test_restart_resumes_with_the_next_unsent_chunk(tmp_path: Path, metrics: Metrics) -> None:
    before = Store(tmp_path / "clawpen.db")
    reply = committed_reply(before, "aaaaaaaaaabbbbbbbbbbcc")
    waiting = ScriptedChannel(max_message_length=10)
    slow = SendError("429", retry_after=60)
    original_send = waiting.send

    async def stall_on_second_chunk(chat_id: str, text: str) -> str:
        if text.startswith("b"):
            raise slow
        return await original_send(chat_id, text)

    waiting.send = stall_on_second_chunk  # type: ignore[method-assign]
    delivery = asyncio.create_task(Outbox(before, {"telegram": waiting}, metrics).deliver(reply))
    for _ in range(200):
        if before.replies_for("telegram", "1001")[0].attempts:
            break
        await asyncio.sleep(0.005)
    delivery.cancel()  # the orchestrator stops while waiting out the 429
    with pytest.raises(asyncio.CancelledError):
        await delivery
    before.close()

    after = Store(tmp_path / "clawpen.db")
    try:
        [pending] = after.pending_replies("telegram")
        assert pending.chunks_sent == 1
        channel = ScriptedChannel(max_message_length=10)
        assert await Outbox(after, {"telegram": channel}, Metrics()).deliver(pending) is True
        assert [t for _, t in channel.delivered] == ["b" * 10, "cc"]  # "a..." is not repeated
        assert after.pending_replies() == []
    finally:
        after.close()


async def test_outbox_worker_delivers_replies_left_from_before_a_restart(
    tmp_path: Path, metrics: Metrics
) -> None:
    before = Store(tmp_path / "clawpen.db")
    committed_reply(before, "first", chat_id="1")
    committed_reply(before, "second", chat_id="2")
    before.close()

    after = Store(tmp_path / "clawpen.db")
    channel = ScriptedChannel()
    outbox = Outbox(after, {"telegram": channel}, metrics)
    worker = asyncio.create_task(outbox.run("telegram"))
    try:
        for _ in range(200):
            if len(channel.delivered) >= 2:
                break
            await asyncio.sleep(0.005)
        assert channel.delivered == [("1", "first"), ("2", "second")]
        assert after.pending_replies() == []

        committed_reply(after, "third", chat_id="3")  # a new reply wakes the worker
        outbox.notify("telegram")
        for _ in range(200):
            if len(channel.delivered) >= 3:
                break
            await asyncio.sleep(0.005)
        assert channel.delivered[2:] == [("3", "third")]
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        after.close()


async def test_attempts_left_carry_over_a_restart(store: Store, metrics: Metrics) -> None:
    reply = committed_reply(store)
    for _ in range(MAX_ATTEMPTS - 1):
        store.mark_reply_failed(reply.id, "503", final=False)
    [pending] = store.pending_replies()
    channel = ScriptedChannel([transient()] * 3)

    assert await Outbox(store, {"telegram": channel}, metrics).deliver(pending) is False

    assert len(channel.attempts) == 1  # only the last attempt was left
    assert store.counts()["replies.failed"] == 1
