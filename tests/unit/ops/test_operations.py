"""What an operator relies on: refused messages are not failed tasks, the disk refuses new work
before it is full, and `doctor` names each broken prerequisite with its fix (the commands run
against a live orchestrator are in `cli/test_live_commands.py`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.errors import StoreUnavailable
from clawpen.ops.disk import DiskGuard, Usage
from clawpen.ops.doctor import run_checks
from tests.conftest import running
from tests.fakes.fake_telegram import FakeTelegram


async def test_a_refused_message_is_not_a_failed_task(
    orchestrator_factory: Callable[..., Orchestrator], fake_telegram: FakeTelegram
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "x" * 40_000)  # over the limit: refused, answered
        await fake_telegram.wait_for_sent(1)
        counts = await orchestrator.store.counts()
    assert counts.get("tasks.refused") == 1
    assert "tasks.failed" not in counts


def test_the_disk_warns_then_refuses_new_work_before_it_is_full() -> None:
    free = [900, 150, 40]  # MB of 1000
    guard = DiskGuard(
        Path("/data"),
        reserve_mb=64,
        usage=lambda path: Usage(1000 * 2**20, 0, free[0] * 2**20),
        interval=0,
    )
    guard.admit()  # plenty of room
    free[0] = 150
    guard.admit()  # low (under 20%), still accepting
    free[0] = 40
    with pytest.raises(StoreUnavailable) as refused:
        guard.admit()
    assert "40 MB free" in str(refused.value)
    free[0] = 500
    guard.admit()  # space freed: new work again


async def test_doctor_names_each_broken_prerequisite_with_its_fix(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "data_dir: ./data\n"
        "image: clawpen-agent:never-built-here\n"
        "docker_host: unix:///nonexistent/docker.sock\n"
        f"model:\n  base_url: {fake_model.url}\n  api_key: sk-wrong-key\n"
        "agents:\n  - id: assistant\n"
    )
    os.chmod(config, 0o644)
    (tmp_path / "data").mkdir(mode=0o755)
    os.chmod(tmp_path / "data", 0o755)
    checks = {c.name: c for c in await asyncio.to_thread(run_checks, config, {})}
    assert checks["config file"].verdict == "fail"
    assert "chmod 600" in checks["config file"].fix  # a key written out, readable by others
    assert checks["data_dir"].verdict == "fail" and "chmod 700" in checks["data_dir"].fix
    assert checks["docker"].verdict == "fail" and checks["docker"].fix
    assert checks["model"].verdict == "fail" and "secrets set" in checks["model"].fix
