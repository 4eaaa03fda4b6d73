"""Scheduled jobs with real processes and containers: a job fired just before a kill -9 is
delivered once, and a run whose agent keeps crashing is retried and then reported."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running
from .conftest import DockerOrchestratorFactory
from .procs import Orchestrator, clawpen, write_config
from .test_recovery import occurrences, wait_until

pytestmark = pytest.mark.docker

TASK = "write the nine o'clock report"


async def test_kill_9_right_after_a_job_fired_delivers_it_exactly_once(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
    docker_client: docker.DockerClient,
) -> None:
    config = write_config(tmp_path / "clawpen.yaml", fake_model.url, fake_telegram)
    soon = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    config.write_text(
        config.read_text()
        + "jobs:\n  - name: report\n    agent: assistant\n"
        + f'    at: "{soon.replace(tzinfo=None).isoformat()}"\n'
        + f'    task: "{TASK}"\n    deliver_to: telegram:1001\n'
    )
    cleanup_instance.append(instance_id(tmp_path / "data"))
    env = {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    orchestrator = Orchestrator(config, env)
    fake_model.delay = 1.0  # the kill lands while the agent works on the run
    await orchestrator.start()
    await wait_until(lambda: bool(orchestrator.events("jobs_fired")), timeout=30)
    assert await orchestrator.stop(signal.SIGKILL) == -signal.SIGKILL
    await orchestrator.start()
    await wait_until(lambda: occurrences(fake_telegram, TASK) > 0, timeout=90)
    await asyncio.sleep(1.5)  # time for a duplicate to show up
    code, history, _ = await clawpen("jobs", "history", "report", "--config", str(config), env=env)
    code_list, listed, _ = await clawpen("jobs", "list", "--config", str(config), env=env)
    await orchestrator.stop()
    assert occurrences(fake_telegram, TASK) == 1
    assert code == 0 and history.count("\t") == 1 and "\tok" in history  # one run, answered
    assert code_list == 0 and "\tdone\t" in listed  # a one-shot job: never again
    assert not orchestrator.events("jobs_fired")[1:]  # the restart did not fire it again


async def test_agent_crash_mid_run_is_retried_then_reported_to_the_chat(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
) -> None:
    job = {
        "name": "crashy",
        "agent": "assistant",
        "every": "1h",
        "task": "run: kill -9 $PPID",  # the agent kills itself on every try
        "deliver_to": "telegram:1001",
    }
    orchestrator, _instance = docker_orchestrator_factory(fake_telegram, jobs=[job])
    async with running(orchestrator):
        await orchestrator.scheduler.run_now("crashy")
        await fake_telegram.wait_for_sent(1, timeout=90)
        await wait_until(lambda: not orchestrator.board.running, timeout=30)
        runs = await orchestrator.store.job_runs("assistant", "crashy")
        [crashy] = await orchestrator.scheduler.jobs()
    [report] = fake_telegram.texts_to(1001)
    assert report.startswith("The scheduled job crashy failed: the agent failed 3 times")
    assert [r.status for r in runs] == ["failed"] and crashy.failures == 1
    assert crashy.state == "active"  # one failure is not yet a reason to pause
