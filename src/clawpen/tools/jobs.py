"""What an agent may do about scheduled jobs, through its own socket.

The socket is the identity: a request on agent A's socket is A's. A job A creates answers to
the chat of the task A is working on (it was asked there), and only if that chat is paired with
A; a job's own run cannot create jobs (no job that breeds jobs). Names are A's own: B's jobs
are neither seen nor clashed with. An agent has at most
``MAX_JOBS`` jobs of its own, none running more often than every ``MIN_INTERVAL`` seconds, and
cancels only the jobs it created: the operator's (config, CLI) are not its to remove.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clawpen_agent.protocol import JobRequest

from .. import schedule as sched
from ..door.server import JobRefused
from ..errors import ClawpenError
from ..models import JOB_CHANNEL
from ..schedule import JobExists, describe_job
from .api import NO_GATE, Chats, Gate, JobBook

MAX_JOBS = 50
MIN_INTERVAL = 300.0  # seconds


class AgentJobs:
    def __init__(self, scheduler: JobBook, chats: Chats, gate: Gate = NO_GATE) -> None:
        self.scheduler = scheduler
        self.chats = chats
        self.gate = gate

    async def create(
        self, agent_id: str, request: JobRequest, task_id: int | None = None
    ) -> dict[str, Any]:
        answering = self.chats.answering(agent_id, task_id)
        if answering is None:
            raise JobRefused(409, "a job is created while answering a chat, and none is open")
        if answering.channel == JOB_CHANNEL:
            raise JobRefused(403, "a scheduled job's run cannot create jobs")
        if self.chats.pairings.get(answering.chat_only) != agent_id:
            raise JobRefused(403, "this chat is not paired with you")
        own = [j for j in await self.scheduler.jobs(agent_id) if j.spec.source == "agent"]
        if len(own) >= MAX_JOBS:
            raise JobRefused(429, f"you have {MAX_JOBS} jobs already; cancel one first")
        try:
            spec = sched.make_spec(
                request.name,
                agent_id,
                request.task,
                answering,
                request.schedule,
                request.every,
                request.at,
                request.timezone,
                source="agent",
            )
        except sched.ScheduleError as exc:
            raise JobRefused(400, str(exc)) from None
        shortest = sched.interval(sched.schedule_of(spec))
        if shortest is not None and shortest < MIN_INTERVAL:
            raise JobRefused(400, f"a job may run at most every {MIN_INTERVAL / 60:.0f} minutes")
        if self.gate.asks(agent_id, "jobs"):
            await self._approve(
                agent_id,
                {
                    "op": "create",
                    "name": spec.name,
                    "kind": spec.kind,
                    "spec": spec.spec,
                    "timezone": spec.timezone,
                    "task": spec.task,
                    "deliver_to": str(spec.deliver_to),
                },
                f"schedule job {spec.name!r} ({spec.kind} {spec.spec}, {spec.timezone}):"
                f"\n{spec.task[:300]}",
                task_id,
            )
        try:
            job = await self.scheduler.add(spec)
        except JobExists:  # names are per agent: the clash is with a job of its own
            raise JobRefused(
                409, f"you have a job named {spec.name!r}; pick another name"
            ) from None
        except ClawpenError as exc:
            raise JobRefused(409, exc.problem) from None
        return describe_job(job)

    async def list(self, agent_id: str) -> list[dict[str, Any]]:
        return [describe_job(job) for job in await self.scheduler.jobs(agent_id)]

    async def cancel(self, agent_id: str, name: str) -> dict[str, Any]:
        for job in await self.scheduler.jobs(agent_id):
            if job.name == name and job.spec.source == "agent":
                if self.gate.asks(agent_id, "jobs"):
                    args = {"op": "cancel", "name": name}
                    await self._approve(agent_id, args, f"cancel job {name!r}")
                await self.scheduler.remove(f"{agent_id}/{name}")
                return {"cancelled": name}
        raise JobRefused(404, f"you have no job {name!r} of your own")

    async def _approve(
        self,
        agent_id: str,
        args: Mapping[str, object],
        summary: str,
        task_id: int | None = None,
    ) -> None:
        """Wait for a person's decision on this exact change; JobRefused unless allowed."""
        verdict = await self.gate.request(agent_id, "jobs", args, summary, task_id)
        if not verdict.approved:
            raise JobRefused(403, f"{args['op']} job {verdict}; nothing changed")
