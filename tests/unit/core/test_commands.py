"""In-chat commands: answered by the orchestrator through the reply path, never by a model."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.core import commands
from clawpen.demo.model import FakeModel
from clawpen.models import Route
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.store.base import UsageRow
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel
from tests.waiting import until


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/new", "new"),
        ("  /STOP ", "stop"),
        ("/usage@clawpen_bot", "usage"),
        ("/help", "help"),
        ("/new please", None),
        ("/tmp is full", None),
        ("/unknown", None),
        ("please /stop", None),
        ("new", None),
    ],
)
def test_parse(text: str, command: str | None) -> None:
    assert commands.parse(text) == command


def test_usage_text_sums_models_and_shows_cost_when_priced() -> None:
    rows = [
        UsageRow("2026-05-01", "a", "m1", 3, 1000, 200, 0.0123, 0),
        UsageRow("2026-05-01", "a", "m2", 1, 10, 5, 0.0, 0),
    ]
    answer = commands.usage_text("a", rows, 50_000)
    assert answer.splitlines()[0] == (
        "Today (UTC) a has used 1,215 tokens in 4 model calls, $0.0123"
        " (budget 50,000 tokens a day)."
    )
    assert "m1: 1,000 in, 200 out, $0.0123" in answer


def channel_orchestrator(
    factory: Callable[..., Orchestrator], tmp_path: Path
) -> tuple[Orchestrator, MemoryChannel]:
    channel = MemoryChannel(name="telegram")
    orchestrator = factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        pairings=[
            {"channel": "telegram:100", "agent": "assistant"},
            {"channel": "telegram:200", "agent": "assistant"},
        ],
    )
    return orchestrator, channel


async def test_help_and_usage_are_answered_without_the_model(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, tmp_path: Path
) -> None:
    orchestrator, channel = channel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        assert await channel.push("100", "/usage") == Route("assistant")
        await channel.wait_sent(1, "100")
        await channel.push("100", "hello")
        await channel.wait_sent(2, "100")
        await channel.push("100", "/usage")
        await channel.push("100", "/help")
        await channel.wait_sent(4, "100")
    first_usage, echo, usage, help_text = channel.texts_to("100")
    assert first_usage == "Today (UTC) assistant has used no tokens."
    assert echo == "echo: hello"
    assert usage.startswith("Today (UTC) assistant has used ") and " in 1 model calls" in usage
    assert "/new" in help_text and "/stop" in help_text and "/usage" in help_text
    assert len(fake_model.requests) == 1  # only "hello" reached the model
    assert all("/usage" not in str(r) and "/help" not in str(r) for r in fake_model.requests)


async def test_new_starts_a_fresh_conversation_for_that_chat_only(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, tmp_path: Path
) -> None:
    orchestrator, channel = channel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        await channel.push("100", "my name is Ada")
        await channel.push("200", "I am Bob")
        await channel.wait_sent(1, "100")
        await channel.wait_sent(1, "200")
        await channel.push("100", "/new")
        await channel.wait_sent(2, "100")
        await channel.push("100", "who am I?")
        await channel.wait_sent(3, "100")
        await channel.push("200", "who am I?")
        await channel.wait_sent(2, "200")
    assert channel.texts_to("100")[1] == commands.new_session_text()
    by_chat = {r["messages"][-1]["content"][-1]["text"]: r for r in fake_model.requests}
    assert len(fake_model.requests) == 4
    chat_100, chat_200 = fake_model.requests[2], fake_model.requests[3]
    assert [m["role"] for m in chat_100["messages"]] == ["user"]  # forgotten
    assert len(chat_200["messages"]) == 3  # the other chat remembers
    assert "who am I?" in by_chat


async def test_stop_cancels_the_running_task_of_that_chat(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, tmp_path: Path
) -> None:
    orchestrator, channel = channel_orchestrator(orchestrator_factory, tmp_path)
    async with running(orchestrator):
        await channel.push("200", "/stop")
        await channel.wait_sent(1, "200")
        await channel.push("100", "run: sleep 30")
        board = orchestrator.board
        await until(lambda: "assistant" in board.running, what="the agent at work")
        await channel.push("100", "/stop")
        await channel.wait_sent(2, "100", timeout=15)  # long before the sleep would end
    assert channel.texts_to("200") == ["Nothing is running for this chat."]
    assert sorted(channel.texts_to("100")) == sorted(
        ["Stopping what I was doing.", "Sorry, I could not answer that: you stopped it with /stop"]
    )
    with sqlite3.connect(tmp_path / "data" / "clawpen.db") as db:
        statuses = dict(db.execute("SELECT text, status FROM messages"))
    assert statuses["/stop"] == "answered"
