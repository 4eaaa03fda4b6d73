"""Shared fixtures: fake platforms on loopback, and an orchestrator wired to them."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop

from clawpen.app import AdapterMode, Orchestrator
from clawpen.channels.base import Channel
from clawpen.config import Settings
from clawpen.core.scheduler import Clock
from clawpen.demo.model import FakeModel
from clawpen.obs import logging as clawpen_logging
from clawpen.runtime.base import AgentRuntime
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.store import Store
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

clawpen_logging.configure("info")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop `clawpen run` runs on (uvloop), so the tests see what production sees."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def api_key() -> str:
    return "sk-ant-test-" + secrets.token_hex(16)


@pytest.fixture
async def fake_model(api_key: str) -> AsyncIterator[FakeModel]:
    model = FakeModel(api_key=api_key)
    await model.start()
    yield model
    await model.close()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    telegram = FakeTelegram()
    await telegram.start()
    yield telegram
    await telegram.close()


def make_settings(
    data_dir: Path,
    upstream: FakeModel,
    api_key: str,
    telegram: FakeTelegram | None = None,
    **overrides: Any,
) -> Settings:
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "model": {"name": "claude-test", "base_url": upstream.url, "api_key": api_key},
        "agents": [{"id": "assistant", "system_prompt": "You are a test."}],
        "channels": {"cli": {}},
        "pairings": [],
    }
    if telegram is not None:
        raw["channels"]["telegram"] = {
            "token": telegram.token,
            "api_base_url": telegram.url,
            "poll_timeout": 2,
        }
        raw["pairings"] = [{"channel": "telegram:1001", "agent": "assistant"}]
    raw.update(overrides)
    return Settings.model_validate(raw)


@contextlib.asynccontextmanager
async def running(orchestrator: Orchestrator) -> AsyncIterator[Orchestrator]:
    """Run an orchestrator in the background for the body of a ``async with``."""
    task = asyncio.create_task(orchestrator.run())
    try:
        async with asyncio.timeout(60):
            await orchestrator.ready.wait()
        yield orchestrator
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


UNDER_WAY = ("messages.queued", "messages.claimed", "tasks.running", "replies.pending")


async def settled(orchestrator: Orchestrator, timeout: float = 30) -> None:
    """Until nothing is under way: no message waiting for its agent or in its hands, no task
    running, no reply pending. A send that has not happened by then will not happen (a reply
    is recorded sent only after the platform confirmed its last chunk), so a test can count."""

    async def quiet() -> bool:
        counts = await orchestrator.store.counts()
        return not any(counts.get(state) for state in UNDER_WAY)

    await until(quiet, timeout=timeout, what="no message, task or reply under way")


@pytest.fixture
def orchestrator_factory(
    tmp_path: Path, fake_model: FakeModel, api_key: str
) -> Callable[..., Orchestrator]:
    def build(
        runtime: AgentRuntime | None = None,
        telegram: FakeTelegram | None = None,
        adapters: AdapterMode = "in_process",
        store: Store | None = None,
        channels: Mapping[str, Channel | dict[str, Any]] | None = None,
        config_channels: dict[str, Any] | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> Orchestrator:
        """An orchestrator on the fakes; agents run in-process unless a runtime is given, and
        adapters in this process unless ``adapters="process"``. ``channels`` maps a name to
        its block under ``channels:`` (a dict, as in clawpen.yaml) or to a ready adapter;
        ``config_channels``: the whole ``channels:`` block, when adapters are given apart."""
        given = dict(channels or {})
        blocks = {name: block for name, block in given.items() if isinstance(block, dict)}
        if config_channels is not None:
            overrides["channels"] = config_channels
        elif blocks:
            overrides["channels"] = blocks
        settings = make_settings(tmp_path / "data", fake_model, api_key, telegram, **overrides)
        return Orchestrator.open(
            settings,
            runtime=runtime or InProcessRuntime(tmp_path / "ws"),
            adapters=adapters,
            store=store,
            channels={n: c for n, c in given.items() if not isinstance(c, dict)},
            clock=clock,
        )

    return build
