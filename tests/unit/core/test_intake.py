"""The intake's rules (``core/intake.py``): strangers cost nothing and are never answered, and
text a database cannot take is cleaned on the way in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawpen.app import Orchestrator
from tests.conftest import running
from tests.fakes.fake_runtime import FakeRuntime


async def test_strangers_are_recorded_without_their_text_a_few_times_and_never_answered(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path, fake_telegram: Any
) -> None:
    orchestrator = orchestrator_factory(FakeRuntime(), telegram=fake_telegram)
    async with running(orchestrator):
        for i in range(50):
            await fake_telegram.push_text(666, f"let me in, secret-{i}")
        await fake_telegram.push_text(1001, "paired")
        await fake_telegram.wait_for_sent(1)
        counts = await orchestrator.store.counts()
    assert fake_telegram.texts_to(666) == []
    assert counts["strangers"] == 3  # a few a chat, then only counted
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("clawpen.db*"))
    assert b"secret-" not in raw and b"let me in" not in raw


async def test_text_a_database_cannot_take_is_cleaned_and_answered(
    orchestrator_factory: Callable[..., Orchestrator], fake_telegram: Any
) -> None:
    orchestrator = orchestrator_factory(FakeRuntime(), telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "half a pair \ud800 and a nul \x00 here")
        await fake_telegram.wait_for_sent(1)
    assert fake_telegram.texts_to(1001) == ["echo: half a pair \ufffd and a nul  here"]
