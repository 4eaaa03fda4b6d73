"""Scheduled jobs: fires due jobs from the store and wakes the workers of their agents.

Firing is one store transaction per batch (``Store.fire_jobs``): the run is recorded, queued as
a message of the job's own conversation (``Address("job", NAME)``: it never mixes with a chat's
messages) and the job's next run advanced, before any worker is woken. A crash before the
commit fires the job at the next start; after it, the run is in the store and the worker's
leases carry it to its answer. Either way it runs once. The answer is committed to the job's
``deliver_to`` with the task (``finish_task``) and delivered by the outbox like any reply; a
failed run counts against the job, which pauses itself after ``max_failures`` in a row.

The scheduler knows no worker: it is given ``wake_agent`` (the ``Board``'s ``wake``), and the
workers are given its ``wake`` for when a job's run ends, so the arrows point one way.

Time comes from a ``Clock`` (``now``, ``sleep_until``) so that tests move it by hand. The next
run after a due one is worked out ahead, while the scheduler waits (``LOOKAHEAD``), so that
a minute with thousands of due jobs costs one write, not thousands of cron evaluations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from .. import schedule as sched
from ..channels.registry import address_problem
from ..config import Settings
from ..errors import ClawpenError, StoreError
from ..models import Job, JobFiring, JobRun, JobSpec, serves
from ..obs.logging import get_logger
from ..schedule import JobExists, schedule_of
from ..store import Store, until_written

BATCH = 500  # jobs fired per transaction: the first of a crowded minute need not wait for all
LOOKAHEAD = 90.0  # seconds: the next runs of jobs due this soon are worked out before they are
PREPARE_EVERY = 10.0  # seconds between two looks ahead
MAX_SLEEP = 30.0  # seconds between looks at the store even when nothing says to look


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.time()))


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        wake_agent: Callable[[str], None],
        clock: Clock | None = None,
        lateness: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.wake_agent = wake_agent
        self.clock = clock or SystemClock()
        self.log = get_logger()
        self._wakeup = asyncio.Event()
        # (job, the run it is due for) -> the run after that, worked out ahead of time
        self._following: dict[tuple[str, str, float], float | None] = {}
        self._prepared_at = float("-inf")
        self._added = False
        # seconds between a run's due time and its commit, for each run queued (a metric)
        self.lateness = lateness

    async def open(self) -> None:
        """Reconcile the config file's jobs with the store: added, changed, removed."""
        now = self.clock.now()
        known = {(job.spec.agent_id, job.name): job for job in await self.store.jobs()}
        wanted: list[tuple[JobSpec, float | None]] = []
        for job in self.settings.jobs:
            spec = job.spec()
            old = known.get((spec.agent_id, spec.name))
            unchanged = old is not None and old.spec == spec
            first = old.next_run if unchanged and old else sched.first_run(schedule_of(spec), now)
            wanted.append((spec, first))
        done = await until_written(lambda: self.store.sync_config_jobs(wanted, now), "jobs")
        for what, names in done.items():
            for name in names:
                self.log.info("job_" + what, job=name, source="config")

    def wake(self) -> None:
        """Look at the store again now (a job was added, or a run of one ended)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Fire due jobs for as long as the orchestrator runs."""
        while True:
            self._wakeup.clear()
            try:
                next_due = await self.tick()
            except StoreError as exc:
                self.log.error("store_unwritable", what="scheduler", error=str(exc))
                next_due = self.clock.now() + 1
            await self._sleep(next_due)

    async def _sleep(self, until: float | None) -> None:
        now = self.clock.now()
        target = now + MAX_SLEEP if until is None else min(until, now + MAX_SLEEP)
        if target <= now or self._wakeup.is_set():
            return
        sleeper = asyncio.ensure_future(self.clock.sleep_until(target))
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def tick(self) -> float | None:
        """Fire every job due now; returns when the next one is due."""
        while True:
            now = self.clock.now()
            due = await self.store.due_jobs(now, BATCH)
            if due:
                await self._fire(due, now)
            if len(due) < BATCH:
                break
        await self._prepare(self.clock.now())
        return await self.store.next_due()

    async def _fire(self, due: list[Job], now: float) -> None:
        firings = []
        pairings = await self.store.pairings()
        for job in due:
            assert job.next_run is not None
            if not serves(job.spec.agent_id, job.spec.deliver_to, pairings):
                # the store pauses it in the firing's transaction; said here for the log
                self.log.warning(
                    "job_paused",
                    job=job.name,
                    agentId=job.spec.agent_id,
                    reason=f"{job.spec.deliver_to.chat_address} is no longer paired with it",
                )
            firing = sched.plan(
                schedule_of(job.spec),
                job.next_run,
                now,
                job.spec.misfire,  # type: ignore[arg-type]
                self._following.pop((job.spec.agent_id, job.name, job.next_run), None),
            )
            if firing.late > sched.GRACE:
                self.log.warning(
                    "job_misfired",
                    job=job.name,
                    late=round(firing.late, 1),
                    misfire=job.spec.misfire,
                    ran=firing.run,
                )
            firings.append(
                JobFiring(job.spec.agent_id, job.name, job.next_run, firing.run, firing.next_run)
            )
        fired = await until_written(lambda: self.store.fire_jobs(firings, now), "jobs")
        committed = self.clock.now()
        for agent_id in {agent for _, agent in fired}:
            self.wake_agent(agent_id)
        keys = {(agent, name) for name, agent in fired}
        dues = [
            j.next_run for j in due if (j.spec.agent_id, j.name) in keys and j.next_run is not None
        ]
        for due_at in dues:
            self.lateness(max(0.0, committed - due_at))
        if dues:
            self.log.info(
                "jobs_fired", count=len(dues), latenessMax=round(committed - min(dues), 4)
            )
            self.log.debug("jobs_fired_detail", dues=dues, committed=committed)

    async def _prepare(self, now: float) -> None:
        """Work out the runs after those due within ``LOOKAHEAD``, while nothing is due; every
        ``PREPARE_EVERY`` seconds, or when jobs were added (a job not prepared is worked out
        when it fires: slower, never wrong)."""
        if now - self._prepared_at < PREPARE_EVERY and not self._added:
            return
        self._added = False
        soon = await self.store.due_jobs(now + LOOKAHEAD, 100_000)
        for i, job in enumerate(soon):
            assert job.next_run is not None
            key = (job.spec.agent_id, job.name, job.next_run)
            if key not in self._following:
                self._following[key] = sched.next_after(
                    schedule_of(job.spec), job.next_run, previous=job.next_run
                )
            if i % 500 == 499:
                await asyncio.sleep(0)  # thousands of them must not hold up the loop
        self._prepared_at = now

    # -- operations (CLI and agents) --------------------------------------------------------

    def check(self, spec: JobSpec) -> None:
        """What every new job must satisfy, whoever asks for it."""
        if spec.agent_id not in {a.id for a in self.settings.agents}:
            raise ClawpenError(f"no agent {spec.agent_id!r}", "use one of the configured agents")
        problem = address_problem(spec.deliver_to, self.settings.channel_settings())
        if problem is not None:
            raise ClawpenError(f"deliver_to: {problem}")

    async def add(self, spec: JobSpec) -> Job:
        self.check(spec)
        now = self.clock.now()
        first = sched.first_run(schedule_of(spec), now)
        if not await self.store.add_job(spec, first, now):
            raise JobExists(
                f"{spec.agent_id} has a job named {spec.name!r} already", "pick another name"
            )
        self.log.info("job_added", job=spec.name, agentId=spec.agent_id, source=spec.source)
        self._added = True
        self.wake()
        return await self.get(f"{spec.agent_id}/{spec.name}")

    async def get(self, ref: str) -> Job:
        """The job ``ref`` names: ``agent/name``, or a bare name that one agent alone uses."""
        agent_id, name = parse_job_ref(ref)
        found = [j for j in await self.store.jobs(agent_id) if j.name == name]
        if not found:
            raise ClawpenError(f"no job {ref!r}", "see clawpen jobs list")
        if len(found) > 1:
            agents = ", ".join(j.spec.agent_id for j in found)
            raise ClawpenError(
                f"agents {agents} each have a job {name!r}",
                f"say whose: {found[0].spec.agent_id}/{name}, or add --agent",
            )
        return found[0]

    async def jobs(self, agent_id: str | None = None) -> list[Job]:
        return await self.store.jobs(agent_id)

    async def remove(self, ref: str) -> None:
        job = await self.get(ref)
        if not await self.store.remove_job(job.spec.agent_id, job.name):
            raise ClawpenError(f"no job {ref!r}", "see the list of jobs")
        self.log.info("job_removed", job=job.name, agentId=job.spec.agent_id)

    async def pause(self, ref: str) -> Job:
        job = await self.get(ref)
        await self.store.set_job_state(
            job.spec.agent_id, job.name, "paused", None, "paused by hand"
        )
        self.log.info("job_paused", job=job.name, agentId=job.spec.agent_id, reason="by hand")
        return await self.get(ref)

    async def resume(self, ref: str) -> Job:
        """Active again, its failures forgiven; due next at its first run after now."""
        job = await self.get(ref)
        now = self.clock.now()
        following = sched.next_after(schedule_of(job.spec), now, previous=job.next_run)
        if job.spec.kind == "at":
            following = job.next_run
        state = "active" if following is not None else "done"
        await self.store.set_job_state(job.spec.agent_id, job.name, state, following, "")
        self.log.info("job_resumed", job=job.name, agentId=job.spec.agent_id)
        self.wake()
        return await self.get(ref)

    async def run_now(self, ref: str) -> None:
        """One run at once, outside the schedule (unless one is going: no overlap)."""
        job = await self.get(ref)
        chat = job.spec.deliver_to.chat_address
        if not serves(job.spec.agent_id, job.spec.deliver_to, await self.store.pairings()):
            raise ClawpenError(
                f"{chat} is no longer paired with {job.spec.agent_id}",
                f"pair it again (clawpen pair {chat} {job.spec.agent_id}), or remove the job",
            )
        firing = JobFiring(job.spec.agent_id, job.name, None, True, None)
        fired = await self.store.fire_jobs([firing], self.clock.now())
        if not fired:
            raise ClawpenError(f"job {ref!r} is running now", "wait for its answer")
        self.log.info("job_run_now", job=job.name, agentId=job.spec.agent_id)
        self.wake_agent(fired[0][1])

    async def history(self, ref: str, limit: int = 20) -> list[JobRun]:
        job = await self.get(ref)
        return await self.store.job_runs(job.spec.agent_id, job.name, limit)


def job_ref(name: str, agent_id: str | None) -> str:
    """The job an admin or dashboard request names (``/jobs/NAME?agent=ID``): ``agent/name``,
    or the bare name, which ``Scheduler.get`` takes when one agent alone uses it."""
    return f"{agent_id}/{name}" if agent_id else name


def parse_job_ref(ref: str) -> tuple[str | None, str]:
    """``agent/name`` -> (agent, name); a bare name -> (None, name). Job names hold no '/'.

    >>> parse_job_ref("alpha/daily"), parse_job_ref("daily")
    (('alpha', 'daily'), (None, 'daily'))
    """
    agent_id, slash, name = ref.rpartition("/")
    return (agent_id, name) if slash else (None, name)
