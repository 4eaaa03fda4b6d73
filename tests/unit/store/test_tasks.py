"""Tasks: queued messages batch by conversation, claimed work has one owner at a time, a dead
owner's task is resumed once."""

from __future__ import annotations

from pathlib import Path

from clawpen.models import Address, Route
from clawpen.store import Lease, SQLiteStore

from .support import ME, NOW, OTHER, msg, record


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
    """...which is claimed only once that task ended: one chat's tasks run in order, while
    another chat's can be claimed beside it (issue 24.5)."""
    await record(store, msg("first"))
    task = await store.claim_next_task("assistant", ME, NOW)
    assert task is not None
    await record(store, msg("while busy"))
    await record(store, msg("elsewhere", chat="2002"))
    beside = await store.claim_next_task("assistant", ME, NOW)
    assert beside is not None and beside.texts == ("elsewhere",)
    assert await store.claim_next_task("assistant", ME, NOW) is None  # its chat is at work
    await store.finish_task(task.id, "done", None, ME, NOW)
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
