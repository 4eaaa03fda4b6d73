"""Conversations in parallel (issue 24.5): an agent works on tasks of different chats at once,
up to its ``max_parallel``; one chat's tasks stay in order; ``/stop`` and the tools act on one
task. The long task is a shell command that waits for a file the test creates, so every test
asserts an order of events, never a duration."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawpen.app import Orchestrator
from clawpen.models import Address, ClaimedTask
from clawpen.runtime.inprocess import InProcessRuntime
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel
from tests.waiting import until

CHATS = ("100", "200", "300")


def held(name: str) -> str:
    """A command that runs until the test creates ``go-NAME`` in the workspace (and writes its
    shell's pid first, so the test can tell whether it was killed)."""
    return f"run: echo $$ > pid-{name}; until [ -e go-{name} ]; do sleep 0.02; done; echo {name}"


def parallel_orchestrator(
    factory: Callable[..., Orchestrator], tmp_path: Path, **agent: Any
) -> tuple[Orchestrator, MemoryChannel, Path]:
    channel = MemoryChannel(name="telegram")
    orchestrator = factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        agents=[{"id": "assistant", "system_prompt": "You are a test.", **agent}],
        pairings=[{"channel": f"telegram:{chat}", "agent": "assistant"} for chat in CHATS],
    )
    return orchestrator, channel, tmp_path / "ws" / "assistant"


def at_work(orchestrator: Orchestrator, chat: str) -> bool:
    return orchestrator.board.working_on("assistant", f"telegram:{chat}") is not None


def release(workspace: Path, name: str) -> None:
    (workspace / f"go-{name}").touch()


def tasks(tmp_path: Path) -> list[tuple[str, float, float]]:
    """(chat, created, finished) of every task, in the order they were claimed."""
    with sqlite3.connect(tmp_path / "data" / "clawpen.db") as db:
        return list(
            db.execute("SELECT chat_id, created_at, finished_at FROM tasks ORDER BY id").fetchall()
        )


async def test_another_chat_is_answered_while_a_long_task_runs(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator, channel, workspace = parallel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        await channel.push("100", held("100"))
        await until(lambda: at_work(orchestrator, "100"), what="chat 100's task at work")
        await channel.push("200", "hello")
        await channel.wait_sent(1, "200")
        # answered while chat 100's command still runs: it has neither ended nor answered
        assert at_work(orchestrator, "100") and channel.texts_to("100") == []
        release(workspace, "100")
        await channel.wait_sent(1, "100")
    assert channel.texts_to("200") == ["echo: hello"]
    assert (
        channel.texts_to("100")[0].startswith("tool said:") and "100" in channel.texts_to("100")[0]
    )


async def test_one_chats_messages_are_answered_in_order_one_task_at_a_time(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator, channel, workspace = parallel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        await channel.push("100", held("first"))
        await until(lambda: at_work(orchestrator, "100"), what="chat 100's first task at work")
        await channel.push("100", "second")
        await channel.push("200", "elsewhere")
        await channel.wait_sent(1, "200")  # a free lane took chat 200, not chat 100's second
        assert [t.address.chat for t in orchestrator.board.at_work("assistant")] == ["100"]
        release(workspace, "first")
        await channel.wait_sent(2, "100")
    first, second = channel.texts_to("100")
    assert first.startswith("tool said:") and second == "echo: second"
    chat_100 = [t for t in tasks(tmp_path) if t[0] == "100"]
    assert len(chat_100) == 2 and chat_100[1][1] >= chat_100[0][2]  # claimed after it finished


async def test_max_parallel_holds_the_next_chat_back_until_a_lane_is_free(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator, channel, workspace = parallel_orchestrator(
        orchestrator_factory, tmp_path, max_parallel=2
    )
    async with running(orchestrator):
        await channel.push("100", held("100"))
        await channel.push("200", held("200"))
        await until(
            lambda: at_work(orchestrator, "100") and at_work(orchestrator, "200"),
            what="two tasks at work",
        )
        await channel.push("300", "hello")

        async def queued() -> bool:
            return (await orchestrator.store.counts()).get("messages.queued") == 1

        await until(queued, what="chat 300's message waiting")
        release(workspace, "100")
        await channel.wait_sent(1, "300")
        assert at_work(orchestrator, "200") and channel.texts_to("200") == []
        release(workspace, "200")
        await channel.wait_sent(1, "200")
    by_chat = {chat: (created, finished) for chat, created, finished in tasks(tmp_path)}
    assert by_chat["300"][0] >= by_chat["100"][1]  # claimed only once chat 100's task ended
    assert channel.texts_to("300") == ["echo: hello"]


async def test_stop_stops_that_chats_task_and_no_other(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator, channel, workspace = parallel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        await channel.push("100", held("100"))
        await channel.push("200", held("200"))
        await until(lambda: (workspace / "pid-100").exists(), what="chat 100's command running")
        await until(lambda: (workspace / "pid-200").exists(), what="chat 200's command running")
        await until(lambda: (workspace / "pid-100").read_text().strip(), what="its pid")
        pid = int((workspace / "pid-100").read_text())
        await channel.push("100", "/stop")
        await channel.wait_sent(2, "100")
        await until(lambda: not alive(pid), what="chat 100's command killed")
        assert at_work(orchestrator, "200") and channel.texts_to("200") == []
        assert "assistant" in orchestrator.pool.containers  # the agent itself kept running
        release(workspace, "200")
        await channel.wait_sent(1, "200")
        await channel.push("100", "and now?")
        await channel.wait_sent(3, "100")
    assert sorted(channel.texts_to("100")[:2]) == sorted(
        ["Stopping what I was doing.", "Sorry, I could not answer that: you stopped it with /stop"]
    )
    assert channel.texts_to("100")[2] == "echo: and now?"
    assert channel.texts_to("200")[0].startswith("tool said:")


async def test_a_tool_call_acts_for_the_chat_of_its_own_task(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    """send_message without ``to`` goes to the chat whose task called it, even while the agent
    is at another chat's task too."""
    orchestrator, channel, workspace = parallel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        await channel.push("100", held("100"))
        await until(lambda: at_work(orchestrator, "100"), what="chat 100's task at work")
        message = json.dumps({"text": "a note for chat 200"})
        await channel.push("200", f"tool: send_message {message}")
        await channel.wait_sent(2, "200")
        release(workspace, "100")
        await channel.wait_sent(1, "100")
    assert "a note for chat 200" in channel.texts_to("200")
    assert all("a note" not in text for text in channel.texts_to("100"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_tool_call_naming_another_agents_task_acts_for_no_chat(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    """The task a tool call names (its ``clawpen-task`` header, written by code in the
    container) counts only if it is that agent's own task at work."""
    orchestrator = orchestrator_factory(agents=[{"id": "alpha"}, {"id": "beta"}])
    async with running(orchestrator):
        board, intake = orchestrator.board, orchestrator.intake
        alphas = ClaimedTask(1, "alpha", Address("cli", "alice"), ("u",), ("hi",), 1)
        betas = ClaimedTask(2, "beta", Address("cli", "bob"), ("u",), ("hi",), 1)
        board.started(alphas)
        board.started(betas)
        assert intake.answering("alpha", 1) == Address("cli", "alice")
        assert intake.answering("alpha", 2) is None  # beta's: not alpha's to act for
        assert intake.answering("alpha", 3) is None  # no such task at work
        board.started(ClaimedTask(4, "alpha", Address("cli", "carol"), ("u",), ("hi",), 1))
        assert intake.answering("alpha") is None  # two at work, none named: neither is guessed
        assert intake.answering("beta") == Address("cli", "bob")  # its only one
