"""Scheduled jobs: how late a crowded minute's jobs are dispatched."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import MutableMapping
from typing import Any

from clawpen.config import Settings
from clawpen.core.scheduler import Scheduler
from clawpen.models import Address, JobSpec
from clawpen.obs import logging as clawpen_logging
from clawpen.store import SQLiteStore

from .harness import BenchContext, Row, at_most, benchmark, ms

# minutes and hours of the cron jobs: each job works out its own next run
CRONS = ("{m} * * * *", "{m} {h} * * *", "{m} {h} * * 1-5", "*/5 * * * *", "{m} {h} 1 * *")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")


def jobs(count: int) -> list[JobSpec]:
    return [
        JobSpec(
            name=f"job-{i:05d}",
            agent_id=f"agent-{i % 20:02d}",
            kind="cron",
            spec=CRONS[i % len(CRONS)].format(m=i % 60, h=i % 24),
            timezone=ZONES[i % len(ZONES)],
            task=f"report {i}",
            deliver_to=Address("telegram", str(1000 + i % 500)),
        )
        for i in range(count)
    ]


@benchmark(
    "scheduler",
    "Scheduled jobs: thousands due in the same minute",
    """N cron jobs (five kinds of expression, four time zones, 20 agents) are all due at the same
    instant a few seconds ahead. The scheduler (real `SystemClock`, real SQLite store on disk)
    fires them: each run recorded, queued as its agent's task and its next run advanced, in
    transactions of 500. Lateness = the commit that dispatched a job's run (its task queued and
    its agent's worker woken) minus the instant it was due; the agents' own work is not part of
    it. Target: all of them within 1 s.""",
)
async def scheduler(ctx: BenchContext) -> list[Row]:
    count = ctx.size(10_000, 2_000)
    lead = 6.0 if not ctx.quick else 2.0  # seconds between adding them and their minute
    store = SQLiteStore(ctx.data_dir("sched") / "clawpen.db")
    settings = Settings.model_validate(
        {
            "data_dir": str(ctx.root / "sched-unused"),
            "model": {"api_key": ctx.api_key},
            "agents": [{"id": f"agent-{i:02d}"} for i in range(20)],
        }
    )
    woken: set[str] = set()
    fired: list[tuple[float, float]] = []  # (due, committed)
    all_fired = asyncio.Event()

    def listen(event: MutableMapping[str, Any]) -> None:
        if event.get("event") == "jobs_fired_detail":
            fired.extend((due, event["committed"]) for due in event["dues"])
            if len(fired) >= count:
                all_fired.set()

    unsubscribe = clawpen_logging.subscribe(listen)
    try:
        # each job answers in a chat paired with its agent: a job whose chat is not is paused,
        # not fired (issue 23)
        chats = {spec.deliver_to: spec.agent_id for spec in jobs(min(count, 500))}
        await store.sync_config_pairings(chats, time.time())
        due = time.time() + lead
        specs = jobs(count)
        await asyncio.gather(*(store.add_job(spec, due, time.time()) for spec in specs))
        ready = time.time()
        scheduling = Scheduler(settings, store, woken.add)
        loop = asyncio.create_task(scheduling.run())
        try:
            async with asyncio.timeout(lead + 60):
                await all_fired.wait()
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    finally:
        unsubscribe()
        await store.close()
    lateness = [committed - when for when, committed in fired]
    ctx.note(
        f"{count} jobs in the store {due - ready:.1f} s before they were due;"
        f" {len(woken)} agents woken; the last run dispatched {max(lateness):.3f} s late."
    )
    panel = "Scheduled jobs: dispatch lateness"
    return [
        Row(
            "lateness of each job's dispatch",
            "ms",
            ms(lateness),
            at_most(p99=1000),
            plot=panel,
            count=f"{count} jobs",
        ),
        Row("the latest job", "ms", ms([max(lateness)]), at_most(p50=1000)),
    ]
