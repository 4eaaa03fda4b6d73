"""While the agent works the chat shows it, and the indicator ends with the answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.core import worker
from clawpen.demo.model import FakeModel
from clawpen.models import Address
from clawpen.runtime.inprocess import InProcessRuntime
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel


async def test_typing_is_shown_while_the_agent_works_and_stopped_after(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_model: FakeModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "TYPING_EVERY", 0.2)
    monkeypatch.setattr(worker, "TYPING_AFTER", 0.1)
    fake_model.delay = 1.0  # longer than one "typing..." lasts: it must be renewed
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}
    )
    async with running(orchestrator):
        await channel.push("assistant", "think hard", platform_id="m7")
        await channel.wait_sent(1)
    here = Address("cli", "assistant")
    calls = channel.typing_calls
    assert calls[0] == (here, "m7", True)
    assert calls.count((here, "m7", True)) >= 2, "typing was not renewed while the agent worked"
    assert calls[-1] == (here, "m7", False)


async def test_a_quick_answer_shows_no_typing_at_all(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}
    )
    async with running(orchestrator):
        await channel.push("assistant", "quick one")
        await channel.wait_sent(1)
    assert channel.typing_calls == []  # the answer came before a "typing..." was due
