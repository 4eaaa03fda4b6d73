"""Each `clawpen chat` session is a conversation of its own: two at once each get their own
replies, and a reply nobody waits for any more is a failed delivery, not a `sent` one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from clawpen.app import Orchestrator
from clawpen.channels.cli import CliChannel
from clawpen.channels.cli.adapter import UNREAD
from clawpen.models import Address, OutboundMessage
from clawpen_agent.protocol import Task, TaskResult
from tests.conftest import running
from tests.fakes.fake_runtime import FakeRuntime


async def test_two_sessions_at_once_each_get_their_own_reply(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    seen: list[str] = []

    def echo_noting_conversation(task: Task) -> TaskResult:
        seen.append(task.conversation)
        return TaskResult(text="echo: " + " / ".join(line.text for line in task.lines))

    runtime = FakeRuntime(echo_noting_conversation)
    orchestrator = orchestrator_factory(runtime)
    async with running(orchestrator):
        cli = orchestrator.cli
        assert cli is not None
        async with asyncio.timeout(30):
            first, second = await asyncio.gather(
                cli.ask("assistant", "from the first terminal", session="one"),
                cli.ask("assistant", "from the second terminal", session="two"),
            )
    assert first == "echo: from the first terminal"
    assert second == "echo: from the second terminal"
    assert sorted(seen) == ["cli:assistant:one", "cli:assistant:two"]  # two conversations


async def test_a_reply_for_a_session_that_left_goes_to_its_history_unread() -> None:
    """Nobody is waiting (the terminal was closed, the orchestrator restarted): the reply is
    delivered to the conversation's history, marked unread, for its next `chat --session`."""
    cli = CliChannel()
    platform_id = await cli.send(OutboundMessage(Address("cli", "assistant", "gone"), "hello?"))
    assert platform_id.startswith(UNREAD)
