"""Issue 23: a job belongs to its agent and answers only where its agent is paired.

A job whose chat was unpaired (or paired with another agent) neither runs nor delivers; it
pauses, saying why. Job names are per agent: alpha and beta can each have a "daily", and a
clash tells alpha nothing about beta's jobs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from clawpen.app import Orchestrator
from clawpen.cli.main import app as cli_app
from clawpen.demo.model import FakeModel
from clawpen.models import Address, JobSpec
from clawpen.obs import logging as clawpen_logging
from clawpen.store import Lease, SQLiteStore
from clawpen.store.migrations import MIGRATIONS
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.fake_clock import FakeClock
from tests.waiting import until

from ..conftest import running

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC).timestamp()
AGENTS = [{"id": "alpha"}, {"id": "beta"}]


def two_agents(
    factory: Callable[..., Orchestrator],
    clock: FakeClock,
    channel: MemoryChannel,
    pairings: dict[str, str],
) -> Orchestrator:
    return factory(
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        agents=AGENTS,
        pairings=[{"channel": chat, "agent": agent} for chat, agent in pairings.items()],
        clock=clock,
    )


def schedule(name: str, task: str, every: str = "1h") -> str:
    return "schedule: " + json.dumps({"name": name, "every": every, "task": task})


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "clawpen.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    result = CliRunner().invoke(cli_app, [*args, "--config", str(config)])
    return result.exit_code, result.output


async def test_an_unpaired_job_neither_runs_nor_reaches_the_chats_next_agent(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    clock = FakeClock(START)
    channel = MemoryChannel()
    orchestrator = two_agents(orchestrator_factory, clock, channel, {"telegram:42": "alpha"})
    async with running(orchestrator):
        scheduler, intake = orchestrator.scheduler, orchestrator.intake
        await channel.push("42", schedule("daily", "alpha-job-output"))
        await channel.wait_sent(1)
        await intake.unpair(Address("telegram", "42"))
        clock.set(START + 3600)
        seen: list[dict[str, Any]] = []
        stop = clawpen_logging.subscribe(seen.append)
        try:
            await scheduler.tick()  # due: it must not run
        finally:
            stop()
        job = await scheduler.get("alpha/daily")
        assert job.state == "paused" and "no longer paired with alpha" in job.paused_reason
        [skipped] = await scheduler.history("alpha/daily")
        assert skipped.status == "skipped" and "no longer paired" in skipped.error
        assert "alpha" in [e["agentId"] for e in seen if e.get("event") == "job_paused"]
        code, listed = await asyncio.to_thread(cli, tmp_path, "jobs", "list")
        assert code == 0 and "paused (telegram:42 is no longer paired with alpha" in listed

        # the chat now belongs to beta: resuming alpha's job does not send into it
        await intake.pair(Address("telegram", "42"), "beta")
        await scheduler.resume("alpha/daily")
        clock.set(START + 7200)
        await scheduler.tick()
        assert (await scheduler.get("alpha/daily")).state == "paused"
        code, refused = await asyncio.to_thread(cli, tmp_path, "jobs", "run-now", "alpha/daily")
        assert code != 0 and "no longer paired with alpha" in refused
        counts = await orchestrator.store.counts()
    assert not any("alpha-job-output" in text for text in channel.texts_to("42"))
    assert counts.get("tasks.running", 0) == 0 and "replies.pending" not in counts


async def test_a_job_run_that_ends_after_its_chat_moved_to_beta_is_failed_not_sent(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel
) -> None:
    clock = FakeClock(START)
    channel = MemoryChannel()
    orchestrator = two_agents(orchestrator_factory, clock, channel, {"telegram:42": "alpha"})
    async with running(orchestrator):
        scheduler, intake = orchestrator.scheduler, orchestrator.intake
        await channel.push("42", schedule("daily", "run: echo alpha-job-output"))
        await channel.wait_sent(1)
        fake_model.delay = 2.0  # the run is under way while the chat changes hands
        clock.set(START + 3600)
        await scheduler.tick()

        async def running_now() -> bool:
            return "alpha" in orchestrator.board.running

        await until(running_now)
        await intake.pair(Address("telegram", "42"), "beta")

        async def run_ended() -> bool:
            runs = await scheduler.history("alpha/daily")
            return bool(runs) and runs[0].status != "running"

        await until(run_ended)
        fake_model.delay = 0.0
        [run] = await scheduler.history("alpha/daily")
        job = await scheduler.get("alpha/daily")
        await channel.push("42", "hello beta")  # beta answers its chat as ever
        await channel.wait_sent(2)
        counts = await orchestrator.store.counts()
    assert run.status == "failed" and "no longer paired with alpha" in run.error
    assert job.state == "paused" and "no longer paired with alpha" in job.paused_reason
    assert counts.get("replies.failed") == 1
    assert not any("alpha-job-output" in text for text in channel.texts_to("42"))
    assert channel.texts_to("42")[-1] == "echo: hello beta"


async def test_what_an_agent_queued_for_a_chat_is_failed_when_the_chat_leaves_it(
    tmp_path: Path,
) -> None:
    """send_message checked the pairing, then the chat was unpaired before (or after) the
    commit: the message is refused, or failed, never sent."""
    store = SQLiteStore(tmp_path / "clawpen.db")
    lease = Lease("other", START + 60)  # held elsewhere: no outbox here sends it meanwhile
    to = Address("telegram", "42")
    try:
        await store.pair(Address("telegram", "42"), "alpha", START)
        queued = await store.record_agent_message("alpha", to, "before", lease, START)
        assert queued is not None
        await store.pair(Address("telegram", "42"), "beta", START + 1)
        late = await store.record_agent_message("alpha", to, "after", lease, START + 2)
        mine = await store.record_agent_message("beta", to, "beta's", lease, START + 3)
        pending = await store.pending_replies("telegram")
        counts = await store.counts()
    finally:
        await store.close()
    assert late is None  # refused in the commit's own transaction
    assert mine is not None and [r.text for r in pending] == ["beta's"]
    assert counts.get("replies.failed") == 1


async def test_alpha_and_beta_each_have_a_daily_job_and_a_clash_reveals_nothing(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    clock = FakeClock(START)
    channel = MemoryChannel()
    pairings = {"telegram:42": "alpha", "telegram:43": "beta"}
    orchestrator = two_agents(orchestrator_factory, clock, channel, pairings)
    async with running(orchestrator):
        await channel.push("43", schedule("daily", "beta-private-task"))
        await channel.wait_sent(1, chat="43")
        await channel.push("42", schedule("daily", "alpha-task"))
        await channel.wait_sent(1, chat="42")
        await channel.push("42", schedule("daily", "alpha-again"))
        await channel.wait_sent(2, chat="42")
        await channel.push("42", "list jobs")
        await channel.wait_sent(3, chat="42")
        ambiguous = await asyncio.to_thread(cli, tmp_path, "jobs", "pause", "daily")
        by_ref = await asyncio.to_thread(cli, tmp_path, "jobs", "pause", "alpha/daily")
        by_option = await asyncio.to_thread(
            cli, tmp_path, "jobs", "history", "daily", "--agent", "beta"
        )
        await channel.push("42", "cancel job: daily")
        await channel.wait_sent(4, chat="42")
        left = await orchestrator.scheduler.jobs()
    created, clash, listed, cancelled = channel.texts_to("42")
    assert "scheduled daily" in created and "scheduled daily" in channel.texts_to("43")[0]
    assert "you have a job named 'daily'" in clash
    for text in (clash, listed):
        assert "beta" not in text and "beta-private-task" not in text
    assert ambiguous[0] != 0 and "alpha/daily" in ambiguous[1] and "--agent" in ambiguous[1]
    assert by_ref == (0, "paused alpha/daily\n")
    assert by_option[0] == 0 and "has not run yet" in by_option[1]
    assert "cancelled" in cancelled
    assert [(j.spec.agent_id, j.name) for j in left] == [("beta", "daily")]


async def test_jobs_of_a_database_from_before_keep_their_history_under_their_agent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clawpen.db"
    old = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:11]:
        old.executescript(script)
    old.execute("PRAGMA user_version=11")
    old.execute(
        "INSERT INTO jobs (name, agent_id, kind, spec, timezone, task, deliver_channel,"
        " deliver_chat, misfire, max_failures, source, state, next_run, created_at)"
        " VALUES ('daily', 'alpha', 'every', '1h', 'UTC', 't', 'telegram', '42', 'run_once', 5,"
        " 'cli', 'active', 100, 1)"
    )
    old.execute(
        "INSERT INTO job_runs (job, scheduled_for, fired_at, status, deliver_channel,"
        " deliver_chat) VALUES ('daily', 1, 1, 'ok', 'telegram', '42')"
    )
    old.close()
    store = SQLiteStore(path)
    beta = JobSpec("daily", "beta", "every", "1h", "UTC", "t", Address("telegram", "43"))
    try:
        added = await store.add_job(beta, 200.0, START)
        again = await store.add_job(beta, 200.0, START)
        jobs = await store.jobs()
        runs = await store.job_runs("alpha", "daily")
    finally:
        await store.close()
    assert added and not again
    assert [(j.spec.agent_id, j.name) for j in jobs] == [("alpha", "daily"), ("beta", "daily")]
    assert [r.status for r in runs] == ["ok"] and jobs[0].last_status == "ok"
