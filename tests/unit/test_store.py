"""The store: what it commits survives a reopen, duplicates are dropped, tasks batch by chat."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawpen.models import InboundMessage, Rejection, Route
from clawpen.store import MIGRATIONS, Store

ROUTED = Route("assistant")


def msg(
    text: str, chat_id: str = "1001", platform_id: str | None = None, channel: str = "telegram"
) -> InboundMessage:
    return InboundMessage(
        channel=channel,
        chat_id=chat_id,
        sender_id=f"user{chat_id}",
        text=text,
        platform_id=platform_id or text,
        received_at=1.0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "clawpen.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def test_duplicate_platform_message_is_recorded_once(store: Store) -> None:
    first = store.record_inbound(msg("hi", platform_id="42"), ROUTED)
    again = store.record_inbound(msg("hi", platform_id="42"), ROUTED)
    assert isinstance(first, int)
    assert again is None
    assert store.counts() == {"messages.queued": 1}


def test_duplicate_is_dropped_even_if_routing_changed(store: Store) -> None:
    store.record_inbound(msg("hi", platform_id="42"), ROUTED)
    assert store.record_inbound(msg("hi", platform_id="42"), Rejection("unpaired")) is None
    assert store.counts() == {"messages.queued": 1}


@pytest.mark.parametrize(
    ("other"),
    [
        pytest.param(msg("hi", chat_id="2002", platform_id="42"), id="same_id_other_chat"),
        pytest.param(msg("hi", channel="cli", platform_id="42"), id="same_id_other_channel"),
    ],
)
def test_same_platform_id_elsewhere_is_a_different_message(
    store: Store, other: InboundMessage
) -> None:
    store.record_inbound(msg("hi", platform_id="42"), ROUTED)
    assert store.record_inbound(other, ROUTED) is not None
    assert store.counts() == {"messages.queued": 2}


def test_rejected_message_is_kept_but_never_claimed(store: Store) -> None:
    store.record_inbound(msg("let me in", chat_id="666"), Rejection("not paired"))
    assert store.claim_next_task("assistant") is None
    assert store.counts() == {"messages.rejected": 1}


def test_queued_messages_of_one_chat_batch_into_one_task_in_order(store: Store) -> None:
    store.record_inbound(msg("first"), ROUTED)
    store.record_inbound(msg("other chat", chat_id="2002"), ROUTED)
    store.record_inbound(msg("second"), ROUTED)
    store.record_inbound(msg("third"), ROUTED)

    task = store.claim_next_task("assistant")
    assert task is not None
    assert (task.channel, task.chat_id) == ("telegram", "1001")
    assert task.texts == ("first", "second", "third")
    assert task.senders == ("user1001",) * 3
    assert task.attempts == 1

    other = store.claim_next_task("assistant")
    assert other is not None
    assert other.id != task.id
    assert (other.chat_id, other.texts) == ("2002", ("other chat",))
    assert store.claim_next_task("assistant") is None


def test_message_arriving_during_a_task_goes_into_the_next_task(store: Store) -> None:
    store.record_inbound(msg("first"), ROUTED)
    task = store.claim_next_task("assistant")
    assert task is not None
    store.record_inbound(msg("while busy"), ROUTED)
    assert task.texts == ("first",)
    nxt = store.claim_next_task("assistant")
    assert nxt is not None
    assert nxt.texts == ("while busy",)


def test_tasks_are_per_agent(store: Store) -> None:
    store.record_inbound(msg("for coder", chat_id="coder", channel="cli"), Route("coder"))
    assert store.claim_next_task("assistant") is None
    assert store.counts() == {"messages.queued": 1}
    task = store.claim_next_task("coder")
    assert task is not None
    assert task.agent_id == "coder"


def test_finish_task_commits_exactly_one_reply(store: Store) -> None:
    store.record_inbound(msg("hi"), ROUTED)
    task = store.claim_next_task("assistant")
    assert task is not None
    reply = store.finish_task(task.id, "echo: hi")
    again = store.finish_task(task.id, "a second answer")
    assert again.id == reply.id
    assert again.text == "echo: hi"
    assert (reply.channel, reply.chat_id, reply.task_id) == ("telegram", "1001", task.id)
    assert store.pending_replies() == [reply]
    assert store.counts() == {"messages.answered": 1, "tasks.done": 1, "replies.pending": 1}


def test_failed_task_still_gets_a_reply(store: Store) -> None:
    store.record_inbound(msg("hi"), ROUTED)
    task = store.claim_next_task("assistant")
    assert task is not None
    reply = store.finish_task(task.id, "Sorry, I could not answer that", error="timeout")
    assert reply.text == "Sorry, I could not answer that"
    assert store.counts()["tasks.failed"] == 1
    assert store.running_tasks("assistant") == []


def test_running_tasks_are_claimed_but_unfinished(store: Store) -> None:
    for text, chat in [("a", "1"), ("b", "2"), ("c", "3")]:
        store.record_inbound(msg(text, chat_id=chat), ROUTED)
    done = store.claim_next_task("assistant")
    in_flight = store.claim_next_task("assistant")
    assert done is not None
    assert in_flight is not None
    store.finish_task(done.id, "ok")
    assert store.running_tasks("assistant") == [in_flight]
    assert store.running_tasks("coder") == []
    assert store.counts()["messages.queued"] == 1  # "c" was never claimed


def test_running_tasks_survive_a_reopen(db_path: Path) -> None:
    before = Store(db_path)
    before.record_inbound(msg("hello"), ROUTED)
    before.record_inbound(msg("again"), ROUTED)
    task = before.claim_next_task("assistant")
    before.close()  # the orchestrator dies mid-task

    after = Store(db_path)
    try:
        assert after.running_tasks("assistant") == [task]
        assert after.claim_next_task("assistant") is None  # not handed out twice
    finally:
        after.close()


def test_pending_reply_survives_reopen_until_sent(db_path: Path) -> None:
    first = Store(db_path)
    first.record_inbound(msg("hi"), ROUTED)
    task = first.claim_next_task("assistant")
    assert task is not None
    reply = first.finish_task(task.id, "echo: hi")
    first.close()

    second = Store(db_path)
    assert second.pending_replies() == [reply]
    assert second.running_tasks("assistant") == []
    second.record_chunk_sent(reply.id, "77", done=True)
    second.close()

    third = Store(db_path)
    try:
        assert third.pending_replies() == []
        assert third.counts()["replies.sent"] == 1
        [sent] = third.replies_for("telegram", "1001")
        assert sent.chunks_sent == 1
    finally:
        third.close()


def test_partly_sent_reply_stays_pending_and_remembers_its_chunks(db_path: Path) -> None:
    first = Store(db_path)
    first.record_inbound(msg("hi"), ROUTED)
    task = first.claim_next_task("assistant")
    assert task is not None
    reply = first.finish_task(task.id, "a long answer in chunks")
    first.record_chunk_sent(reply.id, "10", done=False)
    first.record_chunk_sent(reply.id, "11", done=False)
    first.close()

    second = Store(db_path)
    try:
        [pending] = second.pending_replies()
        assert pending.chunks_sent == 2
        second.record_chunk_sent(reply.id, "12", done=True)
        assert second.pending_replies() == []
        row = second.db.execute("SELECT platform_ids FROM replies").fetchone()
        assert row[0] == "10,11,12"
    finally:
        second.close()


def test_pending_replies_can_be_read_per_channel(store: Store) -> None:
    for channel, chat in [("telegram", "1"), ("cli", "assistant")]:
        store.record_inbound(msg("hi", chat_id=chat, channel=channel), ROUTED)
        task = store.claim_next_task("assistant")
        assert task is not None
        store.finish_task(task.id, f"to {channel}")
    assert [r.text for r in store.pending_replies("cli")] == ["to cli"]
    assert [r.text for r in store.pending_replies("telegram")] == ["to telegram"]
    assert [r.text for r in store.pending_replies()] == ["to telegram", "to cli"]


def test_failed_delivery_attempt_keeps_reply_pending_until_final(store: Store) -> None:
    store.record_inbound(msg("hi"), ROUTED)
    task = store.claim_next_task("assistant")
    assert task is not None
    reply = store.finish_task(task.id, "echo: hi")
    store.mark_reply_failed(reply.id, "429", final=False)
    assert [r.attempts for r in store.pending_replies()] == [1]
    store.mark_reply_failed(reply.id, "403", final=True)
    assert store.pending_replies() == []
    assert store.counts()["replies.failed"] == 1


def test_database_is_in_wal_mode(store: Store, db_path: Path) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_reopening_does_not_rerun_migrations(db_path: Path) -> None:
    Store(db_path).close()
    again = Store(db_path)
    try:
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        again.close()


def test_counts_by_table_and_status(store: Store) -> None:
    assert store.counts() == {}
    store.record_inbound(msg("a", chat_id="1"), ROUTED)
    store.record_inbound(msg("b", chat_id="2"), ROUTED)
    store.record_inbound(msg("nope", chat_id="9"), Rejection("not paired"))
    task = store.claim_next_task("assistant")
    assert task is not None
    store.finish_task(task.id, "ok")
    store.claim_next_task("assistant")
    assert store.counts() == {
        "messages.answered": 1,
        "messages.claimed": 1,
        "messages.rejected": 1,
        "tasks.done": 1,
        "tasks.running": 1,
        "replies.pending": 1,
    }


def test_config_pairings_are_restored_at_start_and_runtime_pairings_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "pairings.db")
    store.sync_config_pairings({"telegram:1": "assistant"})
    store.pair("telegram:2", "helper")
    store.unpair("telegram:1")
    assert store.pairings() == {"telegram:2": "helper"}
    store.close()
    reopened = Store(tmp_path / "pairings.db")
    reopened.sync_config_pairings({"telegram:1": "assistant"})  # the next start
    assert reopened.pairings() == {"telegram:1": "assistant", "telegram:2": "helper"}
    reopened.close()
