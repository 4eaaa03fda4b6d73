"""The whole message path with the agent code running in-process (no container)."""

from __future__ import annotations

from collections.abc import Callable

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running


async def test_telegram_message_gets_agent_reply(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "hello there")
        await fake_telegram.wait_for_sent(1)
    assert fake_telegram.texts_to(1001) == ["echo: hello there"]


async def test_shell_tool_output_reaches_the_chat(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: echo from-the-shell; exit 3")
        await fake_telegram.wait_for_sent(1)
    reply = fake_telegram.texts_to(1001)[0]
    assert "from-the-shell" in reply
    assert "exit_code: 3" in reply


async def test_unpaired_chat_is_rejected_and_never_reaches_the_model(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(666, "let me in")
        await fake_telegram.push_text(1001, "paired")
        await fake_telegram.wait_for_sent(1)
        counts = await orchestrator.store.counts()
    assert fake_telegram.texts_to(666) == []
    assert all("let me in" not in str(r["messages"]) for r in fake_model.requests)
    assert counts["strangers"] == 1  # who and when, not what
    assert "messages.rejected" not in counts


async def test_cli_chat_round_trip(orchestrator_factory: Callable[..., Orchestrator]) -> None:
    orchestrator = orchestrator_factory()
    async with running(orchestrator):
        assert orchestrator.cli is not None
        reply = await orchestrator.cli.ask("assistant", "hi from the terminal")
    assert reply == "echo: hi from the terminal"
