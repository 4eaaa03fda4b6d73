"""The worker's rules (``core/worker.py``), with an in-memory runtime whose containers crash on
cue: a crash is retried and answered once, a task that keeps failing is given up and told, a
bug costs one answer, a running agent's next task never asks the engine, and a burst rides on
one turn."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from clawpen.app import Orchestrator
from clawpen.errors import StoreRejected
from clawpen.models import Address, Decision, InboundMessage, Reply
from clawpen.store import Lease, SQLiteStore
from clawpen_agent.protocol import Task, TaskResult
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.fake_runtime import FakeRuntime, echo
from tests.waiting import until


async def ask(orchestrator: Orchestrator, text: str, agent: str = "assistant") -> str:
    assert orchestrator.cli is not None
    async with asyncio.timeout(30):
        return await orchestrator.cli.ask(agent, text)


async def test_a_crashed_container_is_restarted_and_the_task_answered_once(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    runtime = FakeRuntime()
    crashed: list[int] = []

    def crash_first_try(agent_id: str, task: Task) -> bool:
        if task.id in crashed:
            return False
        crashed.append(task.id)
        return True

    runtime.crash_on = crash_first_try
    orchestrator = orchestrator_factory(runtime)
    async with running(orchestrator):
        assert await ask(orchestrator, "survive this") == "echo: survive this"
        counts = await orchestrator.store.counts()
    assert runtime.starts == ["assistant", "assistant"]  # a fresh container for the retry
    replies = sum(n for key, n in counts.items() if key.startswith("replies."))
    assert (counts["tasks.done"], replies) == (1, 1)


async def test_a_task_that_always_crashes_its_agent_is_given_up_and_the_user_told(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    runtime = FakeRuntime()
    runtime.crash_on = lambda agent_id, task: "poison" in task.lines[0].text
    orchestrator = orchestrator_factory(runtime)
    async with running(orchestrator):
        reply = await ask(orchestrator, "poison pill")
        after = await ask(orchestrator, "and now?")
    assert reply.startswith("Sorry, I could not answer that: the agent failed 3 times on this")
    assert after == "echo: and now?"


async def test_a_task_resumed_after_crashes_of_the_orchestrator_is_given_up_not_resumed_for_ever(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    """The task was cut short by the orchestrator's own death five times: the next start
    answers the user instead of running it (and maybe dying) again."""
    path = tmp_path / "data" / "clawpen.db"
    path.parent.mkdir()
    await SQLiteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "INSERT INTO messages (channel, chat_id, thread, sender_id, platform_id, reply_to, text,"
        " received_at, status, agent_id, task_id) VALUES ('cli', 'assistant', '', 'me', 'p1',"
        " '', 'the poison', 1, 'claimed', 'assistant', 1)"
    )
    db.execute(
        "INSERT INTO tasks (id, agent_id, channel, chat_id, status, resumes, created_at, owner,"
        " lease_until) VALUES (1, 'assistant', 'cli', 'assistant', 'running', 4, 1, 'dead', 0)"
    )
    db.close()
    runtime = FakeRuntime()
    again = orchestrator_factory(runtime)
    async with running(again):

        async def failed() -> bool:
            return bool((await again.store.counts()).get("tasks.failed"))

        await until(failed, what="the poison task failed")
        [reply] = await again.store.replies_for(Address("cli", "assistant"))
    assert reply.text.startswith("Sorry, I could not answer that: I started on it 5 times")
    assert runtime.tasks_seen == []  # never handed to the agent again


async def test_a_result_the_door_refuses_still_ends_its_task_with_an_answer(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    def hostile(task: Task) -> TaskResult:
        if "break" in task.lines[0].text:
            return TaskResult(text=123)  # type: ignore[arg-type]
        return echo(task)

    orchestrator = orchestrator_factory(FakeRuntime(hostile))
    async with running(orchestrator):
        reply = await ask(orchestrator, "break it")
        after = await ask(orchestrator, "still alive?")
    assert reply == "Sorry, I could not answer that: the orchestrator refused my result"
    assert after == "echo: still alive?"


async def test_a_bug_on_one_tasks_path_costs_that_answer_not_the_process(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    orchestrator = orchestrator_factory(FakeRuntime())
    session = orchestrator.pool.sessions["assistant"]
    run = session.run

    async def buggy(task: Task, timeout: float) -> TaskResult:
        if "break" in task.lines[0].text:
            raise RuntimeError("a bug")
        return await run(task, timeout)

    session.run = buggy  # type: ignore[method-assign]
    async with running(orchestrator):
        reply = await ask(orchestrator, "break it")
        after = await ask(orchestrator, "still alive?")
    assert reply == (
        "Sorry, I could not answer that: internal error (RuntimeError); see the orchestrator's log"
    )
    assert after == "echo: still alive?"


class RefusingStore(SQLiteStore):
    """The store refuses the first reply it is asked to commit, for good."""

    refused = 0

    async def finish_task(
        self, task_id: int, text: str, error: str | None, lease: Lease, now: float
    ) -> Reply | None:
        if not self.refused:
            self.refused += 1
            raise StoreRejected("the store refused a write (test)")
        return await super().finish_task(task_id, text, error, lease, now)


async def test_a_reply_the_store_refuses_becomes_an_apology_not_a_wedged_task(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    store = RefusingStore(tmp_path / "data" / "clawpen.db")
    orchestrator = orchestrator_factory(FakeRuntime(), store=store)
    async with running(orchestrator):
        reply = await ask(orchestrator, "hello")
        after = await ask(orchestrator, "again")
    assert reply == "Sorry, I could not store my answer to that; please ask again."
    assert after == "echo: again"


async def test_a_running_agents_next_tasks_never_ask_the_engine(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    runtime = FakeRuntime()
    orchestrator = orchestrator_factory(runtime)
    async with running(orchestrator):
        for i in range(20):
            assert await ask(orchestrator, f"task {i}") == f"echo: task {i}"
    assert runtime.starts == ["assistant"]


class UnevenStore(SQLiteStore):
    """Each message takes a little longer to commit than the one before (a disk under load)."""

    delay = 0.0
    SLOWER_EACH_TIME = 0.005  # the fake disk's pace, not a wait for a result

    async def record_inbound(
        self, message: InboundMessage, decision: Decision, lease: Lease, now: float
    ) -> int | None:
        self.delay += self.SLOWER_EACH_TIME
        await asyncio.sleep(self.delay)
        return await super().record_inbound(message, decision, lease, now)


async def test_a_burst_still_being_committed_rides_on_one_turn(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    runtime = FakeRuntime()
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        runtime, store=UnevenStore(tmp_path / "data" / "x.db"), channels={"cli": channel}
    )
    async with running(orchestrator):
        await asyncio.gather(*(channel.push("assistant", f"part {i}") for i in range(5)))
        await channel.wait_sent(1)
    assert len(runtime.tasks_seen) == 1  # one turn, not five
    assert channel.texts_to("assistant")[0].count("part") == 5
