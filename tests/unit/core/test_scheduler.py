"""Scheduled jobs end to end in-process, on a clock the tests move by hand (no sleeping)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from clawpen.app import Orchestrator
from clawpen.cli.main import app as cli_app
from clawpen.demo.model import FakeModel
from clawpen.models import JobFiring
from clawpen.runtime.base import AgentRuntime
from clawpen.schedule import describe_job
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_runtime import FakeRuntime
from tests.waiting import until

from ..conftest import running

BERLIN = "Europe/Berlin"
TASK = "Generate a summary of yesterday's messages"


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def job(name: str = "daily-report", **fields: Any) -> dict[str, Any]:
    """A job as clawpen.yaml writes it."""
    base = {
        "name": name,
        "agent": "assistant",
        "schedule": "0 9 * * *",
        "timezone": BERLIN,
        "task": TASK,
        "deliver_to": "telegram:42",
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def build(
    factory: Callable[..., Orchestrator],
    clock: FakeClock,
    channel: MemoryChannel,
    jobs: list[dict[str, Any]],
    runtime: AgentRuntime | None = None,
) -> Orchestrator:
    return factory(
        runtime,
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        pairings=[{"channel": "telegram:42", "agent": "assistant"}],
        jobs=jobs,
        clock=clock,
    )


async def test_cron_job_fires_at_its_minute_in_its_zone_and_answers_in_its_chat(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    clock = FakeClock(utc(2026, 3, 28, 7, 59))  # 08:59 in Berlin (CET)
    channel = MemoryChannel()
    orchestrator = build(orchestrator_factory, clock, channel, [job()])
    async with running(orchestrator):
        await orchestrator.scheduler.tick()
        assert await orchestrator.store.job_runs("assistant", "daily-report") == []
        clock.set(utc(2026, 3, 28, 8, 0))  # 09:00 in Berlin
        await orchestrator.scheduler.tick()
        await channel.wait_sent(1)
        [daily] = await orchestrator.scheduler.jobs()
        await until(lambda: _last_status(orchestrator, "daily-report", "ok"))
    assert channel.texts_to("42") == [f"echo: {TASK}"]
    assert channel.sent[0].message.reply_to == ""  # it answers no message of the chat
    # the next run is 09:00 Berlin again, which is summer time after the night's change
    assert daily.next_run == utc(2026, 3, 29, 7, 0)
    assert describe_job(daily)["next_run"] == "2026-03-29 09:00 CEST"


async def _last_status(orchestrator: Orchestrator, name: str, status: str) -> bool:
    runs = await orchestrator.store.job_runs("assistant", name)
    return bool(runs) and runs[0].status == status


async def test_a_run_has_its_own_conversation_apart_from_the_chats(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel
) -> None:
    clock = FakeClock(utc(2026, 6, 1, 6, 59))
    channel = MemoryChannel()
    orchestrator = build(orchestrator_factory, clock, channel, [job()])
    async with running(orchestrator):
        await channel.push("42", "hello")
        clock.set(utc(2026, 6, 1, 7, 0))  # 09:00 in Berlin
        await orchestrator.scheduler.tick()
        await channel.wait_sent(2)
    assert sorted(channel.texts_to("42")) == sorted(["echo: hello", f"echo: {TASK}"])
    # neither turn saw the other's text: the model got each on its own
    for request in fake_model.requests:
        text = json.dumps(request["messages"])
        assert ("hello" in text) != (TASK in text)


@pytest.mark.parametrize("misfire", ["run_once", "skip"])
async def test_downtime_gives_one_catch_up_run_or_none_as_the_policy_says(
    orchestrator_factory: Callable[..., Orchestrator], misfire: str
) -> None:
    jobs = [job(timezone="UTC", misfire=misfire)]
    clock = FakeClock(utc(2026, 6, 1, 8, 0))
    first = MemoryChannel()
    async with running(build(orchestrator_factory, clock, first, jobs)) as orchestrator:
        clock.set(utc(2026, 6, 1, 9, 0))
        await orchestrator.scheduler.tick()
        await first.wait_sent(1)
        await until(lambda: _last_status(orchestrator, "daily-report", "ok"))
    clock.set(utc(2026, 6, 3, 12, 0))  # down for two days and three hours: three runs missed
    second = MemoryChannel()
    async with running(build(orchestrator_factory, clock, second, jobs)) as orchestrator:
        await orchestrator.scheduler.tick()
        if misfire == "run_once":
            await second.wait_sent(1)
            await until(lambda: _last_status(orchestrator, "daily-report", "ok"))
        runs = await orchestrator.store.job_runs("assistant", "daily-report")
        [daily] = await orchestrator.scheduler.jobs()
    assert [r.status for r in runs] == ["ok" if misfire == "run_once" else "skipped", "ok"]
    assert len(second.sent) == (1 if misfire == "run_once" else 0)
    assert daily.next_run == utc(2026, 6, 4, 9, 0)  # and no burst of the missed ones


async def test_restart_during_a_run_answers_it_once_and_fires_no_second(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel
) -> None:
    jobs = [job(timezone="UTC")]
    clock = FakeClock(utc(2026, 6, 1, 8, 0))
    fake_model.delay = 5.0  # the first orchestrator stops while the agent thinks
    async with running(build(orchestrator_factory, clock, MemoryChannel(), jobs)) as first:
        clock.set(utc(2026, 6, 1, 9, 0))
        await first.scheduler.tick()
        await until(lambda: _true(len(fake_model.requests) == 1))
    fake_model.delay = 0.0
    clock.set(utc(2026, 6, 1, 9, 10))
    channel = MemoryChannel()
    async with running(build(orchestrator_factory, clock, channel, jobs)) as second:
        await second.scheduler.tick()
        await channel.wait_sent(1)
        await until(lambda: _last_status(second, "daily-report", "ok"))
        runs = await second.store.job_runs("assistant", "daily-report")
    assert channel.texts_to("42") == [f"echo: {TASK}"]
    assert len(runs) == 1


async def _true(value: bool) -> bool:
    return value


async def test_agent_crash_retries_then_reports_and_repeated_failures_pause_the_job(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    runtime = FakeRuntime()
    runtime.crash_on = lambda agent_id, task: True
    start = utc(2026, 6, 1, 9, 0)
    clock = FakeClock(start)
    channel = MemoryChannel()
    jobs = [job("hourly", schedule=None, every="1h", timezone="UTC", max_failures=2)]
    orchestrator = build(orchestrator_factory, clock, channel, jobs, runtime)
    async with running(orchestrator):
        for hour, sent in ((1, 1), (2, 2)):
            clock.set(start + hour * 3600)
            await orchestrator.scheduler.tick()
            await channel.wait_sent(sent)
        await until(lambda: _last_status(orchestrator, "hourly", "failed"))
        clock.set(start + 3 * 3600)
        await orchestrator.scheduler.tick()
        [hourly] = await orchestrator.scheduler.jobs()
        runs = await orchestrator.store.job_runs("assistant", "hourly")
    first, second = channel.texts_to("42")
    assert first.startswith("The scheduled job hourly failed: the agent failed 3 times")
    assert "paused" not in first
    assert "failed 2 times in a row, so it is paused" in second
    assert len(runtime.tasks_seen) == 6  # three tries of each run
    assert hourly.state == "paused" and "2 failed runs" in hourly.paused_reason
    assert len(runs) == 2  # paused: the third hour fired nothing


async def test_job_created_from_chat_is_listed_and_delivers_to_that_chat(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    start = utc(2026, 6, 1, 9, 0)
    clock = FakeClock(start)
    channel = MemoryChannel()
    orchestrator = build(orchestrator_factory, clock, channel, [])
    ask = {"name": "stretch", "every": "1h", "task": "remind me to stretch"}
    async with running(orchestrator):
        await channel.push("42", "schedule: " + json.dumps(ask))
        await channel.wait_sent(1)
        await channel.push("42", "schedule: " + json.dumps({**ask, "name": "x", "every": "1m"}))
        await channel.wait_sent(2)
        listed = await asyncio.to_thread(_cli, tmp_path, "jobs", "list")
        clock.set(start + 3600)
        await orchestrator.scheduler.tick()
        await channel.wait_sent(3)
        await channel.push("42", "cancel job: stretch")
        await channel.wait_sent(4)
        left = await orchestrator.scheduler.jobs()
    created, too_often, reminded, cancelled = channel.texts_to("42")
    assert "scheduled stretch (every 1h, UTC)" in created
    assert "at most every 5 minutes" in too_often
    assert "assistant/stretch\tevery 1h (UTC)\tactive" in listed
    assert "to: telegram:42" in listed
    assert reminded == "echo: remind me to stretch"
    assert "cancelled stretch" in cancelled and left == []


def _cli(tmp_path: Path, *args: str) -> str:
    config = tmp_path / "clawpen.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    result = CliRunner().invoke(cli_app, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


async def test_cli_manages_jobs_add_pause_resume_run_now_history_rm(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    clock = FakeClock(utc(2026, 1, 10, 12, 0))
    channel = MemoryChannel()
    orchestrator = build(orchestrator_factory, clock, channel, [])
    cli = lambda *args: asyncio.to_thread(_cli, tmp_path, *args)  # noqa: E731
    async with running(orchestrator):
        added = await cli(
            "jobs", "add", "standup", "--task", "standup notes", "--deliver-to",
            "telegram:42", "--schedule", "0 8 * * 1-5", "--timezone", "America/New_York",
        )  # fmt: skip
        assert "next run 2026-01-12 08:00 EST" in added  # Saturday -> Monday, New York time
        assert "paused" in await cli("jobs", "pause", "standup")
        assert "\tpaused (paused by hand)\t" in await cli("jobs", "list")
        await cli("jobs", "run-now", "standup")
        await channel.wait_sent(1)
        await until(lambda: _last_status(orchestrator, "standup", "ok"))
        history = await cli("jobs", "history", "standup")
        assert "next run 2026-01-12 08:00 EST" in await cli("jobs", "resume", "standup")
        await cli("jobs", "rm", "standup")
        assert await cli("jobs", "list") == "no jobs\n"
    assert channel.texts_to("42") == ["echo: standup notes"]
    assert "(run-now)\tok" in history


async def test_config_jobs_are_reconciled_at_start_keeping_history(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    clock = FakeClock(utc(2026, 6, 1, 8, 0))
    first = [job("a", timezone="UTC"), job("b", timezone="UTC", schedule="0 10 * * *")]
    channel = MemoryChannel()
    async with running(build(orchestrator_factory, clock, channel, first)) as orchestrator:
        clock.set(utc(2026, 6, 1, 9, 0))
        await orchestrator.scheduler.tick()
        await channel.wait_sent(1)
        await until(lambda: _last_status(orchestrator, "a", "ok"))
    clock.set(utc(2026, 6, 1, 9, 30))
    second = [job("a", timezone="UTC", schedule="30 11 * * *"), job("c", schedule=None, every="2h")]
    async with running(build(orchestrator_factory, clock, MemoryChannel(), second)) as again:
        jobs = {j.name: j for j in await again.scheduler.jobs()}
        history = await again.store.job_runs("assistant", "a")
    assert sorted(jobs) == ["a", "c"]  # b removed, c added
    assert jobs["a"].next_run == utc(2026, 6, 1, 11, 30)  # changed: its new schedule
    assert [r.status for r in history] == ["ok"]  # and its history kept
    assert jobs["c"].next_run == utc(2026, 6, 1, 11, 30)


async def test_firing_twice_on_the_same_decision_runs_once(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    """Two schedulers (or a retried write) deciding on the same due run: one run."""
    clock = FakeClock(utc(2026, 6, 1, 8, 0))
    orchestrator = build(orchestrator_factory, clock, MemoryChannel(), [job(timezone="UTC")])
    async with running(orchestrator):
        due = utc(2026, 6, 1, 9, 0)
        firing = JobFiring("assistant", "daily-report", due, True, utc(2026, 6, 2, 9, 0))
        fired = await orchestrator.store.fire_jobs([firing], due)
        again = await orchestrator.store.fire_jobs([firing], due)
        now = await orchestrator.store.fire_jobs(
            [JobFiring("assistant", "daily-report", None, True, None)], due
        )
    assert fired == [("daily-report", "assistant")]
    assert again == [] and now == []  # run-now too waits for the run going: no overlap


async def test_hostile_job_requests_on_the_agent_socket_are_refused(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    clock = FakeClock(utc(2026, 6, 1, 8, 0))
    orchestrator = build(orchestrator_factory, clock, MemoryChannel(), [job(timezone="UTC")])
    socket = tmp_path / "data" / "agents" / "assistant" / "agent.sock"
    bodies: list[tuple[bytes, int]] = [
        (b"not json", 400),
        (b"[]", 400),
        (json.dumps({"name": "x", "task": "t", "every": "1h", "deliver_to": "x:1"}).encode(), 400),
        (json.dumps({"name": "../etc", "task": "t", "every": "1h"}).encode(), 400),
        (json.dumps({"name": "x", "task": "t"}).encode(), 400),
        (json.dumps({"name": "x", "task": "t" * 20_000, "every": "1h"}).encode(), 413),
        (json.dumps({"name": "x", "task": "t", "every": "1h"}).encode(), 409),  # no chat open
    ]
    async with running(orchestrator):
        connector = aiohttp.UnixConnector(path=str(socket))
        async with aiohttp.ClientSession(connector=connector) as http:
            for body, status in bodies:
                async with http.post("http://agent/v1/jobs", data=body) as response:
                    assert response.status == status, body[:80]
            async with http.delete("http://agent/v1/jobs/daily-report") as response:
                assert response.status == 404  # the operator's job is not the agent's to cancel
            async with http.get("http://agent/v1/jobs") as response:
                listed = await response.json()
        jobs = await orchestrator.scheduler.jobs()
    assert [j["name"] for j in listed["jobs"]] == ["daily-report"]
    assert [j.name for j in jobs] == ["daily-report"]
