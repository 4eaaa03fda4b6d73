"""What the dashboard shows and what it may do: the orchestrator's state as plain JSON values.

The page (``web/``) renders these dicts and nothing else; every string in them may come from
a stranger (a chat message, a chat id) and is shown as text, never as markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.approvals import describe_approval
from ..core.intake import Intake
from ..core.scheduler import Scheduler
from ..errors import ClawpenError
from ..models import ChannelState, ClaimedTask
from ..runtime.pool import AgentPool
from ..schedule import describe_job, describe_run
from ..store import Store
from ..store.base import UsageRow

RECENT = 30  # messages and tasks listed
SPEND_DAYS = 14  # days in the spend chart
RUNS_PER_JOB = 5  # a job's history, newest first

# log events after which the page fetches the overview again (the server-sent events)
LIVE_EVENTS = frozenset(
    {
        "message_received",
        "message_rejected",
        "message_routed",
        "task_executed",
        "reply_sent",
        "reply_undelivered",
        "agent_started",
        "agent_stopped",
        "agent_crashed",
        "agent_adopted",
        "chat_paired",
        "chat_unpaired",
        "jobs_fired",
        "job_added",
        "job_removed",
        "job_paused",
        "job_resumed",
        "channel_disabled",
        "channel_restarting",
        "budget_warning",
    }
)


class DashboardView:
    def __init__(
        self,
        store: Store,
        pool: AgentPool,
        intake: Intake,
        running: Mapping[str, Mapping[int, ClaimedTask]],
        scheduler: Scheduler,
        channel_states: Callable[[], Mapping[str, ChannelState]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.pool = pool
        self.intake = intake
        self.running = running  # agent id -> the tasks it is at (the workers' board)
        self.scheduler = scheduler
        self.channel_states = channel_states
        self.clock = clock

    async def overview(self) -> dict[str, Any]:
        """Everything the page shows, in one answer (the page asks again after each event)."""
        now = self.clock()
        messages = await self.store.recent_messages(RECENT)
        tasks = await self.store.recent_tasks(RECENT)
        days = _days(now, SPEND_DAYS)
        usage = await self.store.usage_by_day(_day_start(days[0]))
        return {
            "now": now,
            "agents": self._agents(),
            "channels": [
                {"name": s.name, "state": s.state, "error": s.error, "restarts": s.restarts}
                for s in sorted(self.channel_states().values(), key=lambda s: s.name)
            ],
            "pairings": self.intake.pairings_written(),
            "messages": [
                {
                    "id": m.id,
                    "channel": m.channel,
                    "chat": m.chat,
                    "sender": m.sender,
                    "text": m.text,
                    "at": m.received_at,
                    "status": m.status,
                    "agent": m.agent_id,
                }
                for m in messages
            ],
            "tasks": [
                {
                    "id": t.id,
                    "agent": t.agent_id,
                    "chat": f"{t.channel}:{t.chat}",
                    "status": t.status,
                    "at": t.created_at,
                    "seconds": None if t.finished_at is None else t.finished_at - t.created_at,
                    "error": t.error or "",
                }
                for t in tasks
            ],
            "jobs": await self._jobs(),
            "approvals": await self._approvals(),
            "spend": spend_series(usage, days, sorted(self.pool.sessions)),
        }

    def _agents(self) -> list[dict[str, Any]]:
        out = []
        for agent_id in sorted(self.pool.sessions):
            container = self.pool.containers.get(agent_id)
            tasks = sorted((self.running.get(agent_id) or {}).values(), key=lambda t: t.id)
            task = tasks[0] if tasks else None
            if task is not None:
                state = "working"
            elif agent_id in self.pool.paused:
                state = "paused"
            elif container is not None:
                state = "running"
            else:
                state = "stopped"
            out.append(
                {
                    "id": agent_id,
                    "state": state,
                    "container": container[:12] if container else None,
                    "task": None if task is None else {"id": task.id, "chat": str(task.address)},
                    "tasks": [{"id": t.id, "chat": str(t.address)} for t in tasks],
                }
            )
        return out

    async def _jobs(self) -> list[dict[str, Any]]:
        out = []
        for job in await self.scheduler.jobs():
            runs = await self.scheduler.history(f"{job.spec.agent_id}/{job.name}")
            described = describe_job(job)
            described["runs"] = [describe_run(r, job.spec.timezone) for r in runs[:RUNS_PER_JOB]]
            out.append(described)
        return out

    # -- actions -----------------------------------------------------------------------------

    async def _approvals(self) -> list[dict[str, Any]]:
        """The requests waiting for a person's decision."""
        if self.intake.approvals is None:
            return []
        return [describe_approval(a) for a in await self.intake.approvals.pending()]

    async def decide(self, approval_id: str, action: str) -> None:
        """Allow or deny a pending request from the dashboard (token and CSRF checked)."""
        if self.intake.approvals is None:
            raise ClawpenError("this orchestrator runs no approvals")
        if action not in ("allow", "deny") or not approval_id.isdigit():
            raise ClawpenError(f"no approval action {action!r}", "use allow or deny")
        await self.intake.approvals.decide(
            int(approval_id), action == "allow", "dashboard", "dashboard"
        )

    async def pair(self, chat: str, agent_id: str) -> None:
        await self.intake.pair(self.intake.read_chat(chat), agent_id)

    async def stop_agent(self, agent_id: str) -> None:
        if agent_id not in self.pool.sessions:
            raise ClawpenError(f"no agent {agent_id!r}")
        if agent_id in self.pool.containers:
            await self.pool.stop(agent_id, "stopped from the dashboard")

    async def job_action(self, name: str, action: str) -> None:
        if action == "pause":
            await self.scheduler.pause(name)
        elif action == "resume":
            await self.scheduler.resume(name)
        else:
            raise ClawpenError(f"no job action {action!r}", "use pause or resume")


def _days(now: float, count: int) -> list[str]:
    """The last ``count`` UTC days, oldest first, as the store names them (YYYY-MM-DD)."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=count - 1 - i)).isoformat() for i in range(count)]


def _day_start(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def spend_series(usage: list[UsageRow], days: list[str], agents: list[str]) -> dict[str, Any]:
    """Per agent, dollars and tokens on each day (0 where none), for the chart; pure.

    >>> spend_series([UsageRow("2026-01-02", "a", "m", 1, 10, 5, 0.5, 0)],
    ...              ["2026-01-01", "2026-01-02"], ["a"])["agents"]["a"]["usd"]
    [0.0, 0.5]
    """
    index = {day: i for i, day in enumerate(days)}
    series: dict[str, dict[str, list[float]]] = {
        a: {"usd": [0.0] * len(days), "tokens": [0.0] * len(days)} for a in agents
    }
    for row in usage:
        if row.day not in index:
            continue
        entry = series.setdefault(
            row.agent_id, {"usd": [0.0] * len(days), "tokens": [0.0] * len(days)}
        )
        entry["usd"][index[row.day]] += float(row.usd or 0.0)
        entry["tokens"][index[row.day]] += float(row.input_tokens + row.output_tokens)
    return {
        "days": days,
        "agents": series,
        "total_usd": {a: round(sum(s["usd"]), 6) for a, s in series.items()},
        "total_tokens": {a: int(sum(s["tokens"])) for a, s in series.items()},
    }
