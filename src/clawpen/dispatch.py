"""The message path, in order: accept -> route -> queue -> agent -> reply -> deliver.

Every step is committed before the next begins, so a crash anywhere resumes from the store.
Each agent has one worker: it takes one task at a time, and messages that arrive while it works
are batched into its next turn.
"""

from __future__ import annotations

import asyncio
import time

from clawpen_agent.protocol import ChatLine, Task

from .agentapi import AgentGone
from .agents import AgentPool
from .config import Settings
from .errors import ClawpenError
from .logging import get_logger
from .metrics import Metrics
from .models import ClaimedTask, InboundMessage, Rejection, Route
from .outbox import Outbox
from .router import route
from .store import Store


class Dispatcher:
    def __init__(
        self, settings: Settings, store: Store, pool: AgentPool, outbox: Outbox, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.outbox = outbox
        self.metrics = metrics
        self.log = get_logger()
        self.pairings = {p.channel: p.agent for p in settings.pairings}
        self.agent_ids = frozenset(a.id for a in settings.agents)
        self._wakeups = {a: asyncio.Event() for a in self.agent_ids}

    async def accept(self, message: InboundMessage) -> Route | Rejection | None:
        """Commit and route one inbound message. Returns after the commit: then it is safe to
        acknowledge it to the platform."""
        decision = route(message, self.pairings, self.agent_ids)
        row = self.store.record_inbound(message, decision)
        context = {"channel": message.channel, "chat": message.chat_id}
        if row is None:
            self.log.info("message_duplicate", platformId=message.platform_id, **context)
            self.metrics.messages.labels(message.channel, "duplicate").inc()
            return None
        self.log.info("message_received", messageId=row, **context)
        if isinstance(decision, Rejection):
            self.log.warning("message_rejected", messageId=row, reason=decision.reason, **context)
            self.metrics.messages.labels(message.channel, "rejected").inc()
            return decision
        self.log.info("message_routed", messageId=row, agentId=decision.agent_id, **context)
        self.metrics.messages.labels(message.channel, "routed").inc()
        self._wakeups[decision.agent_id].set()
        return decision

    async def run_agent(self, agent_id: str) -> None:
        """The agent's worker: one task at a time, for as long as the orchestrator runs."""
        wakeup = self._wakeups[agent_id]
        while True:
            await wakeup.wait()
            wakeup.clear()
            while (task := self.store.claim_next_task(agent_id)) is not None:
                await self.execute(task)

    async def resume(self) -> None:
        """After a restart: re-run tasks that were in flight, resend unsent replies."""
        for task in self.store.running_tasks():
            self.log.info("task_resumed", agentId=task.agent_id, taskId=task.id)
            await self.execute(task)
        await self.outbox.deliver_pending()
        for agent_id in self.store.agents_with_queued_messages():
            if agent_id in self._wakeups:
                self._wakeups[agent_id].set()

    async def execute(self, claimed: ClaimedTask) -> None:
        agent = self.settings.agent(claimed.agent_id)
        task = Task(
            id=claimed.id,
            conversation=f"{claimed.channel}:{claimed.chat_id}",
            lines=[ChatLine(s, t) for s, t in zip(claimed.senders, claimed.texts, strict=True)],
            model=agent.model or self.settings.model.name,
            system_prompt=agent.system_prompt,
            max_tokens=self.settings.model.max_tokens,
        )
        context = {
            "agentId": agent.id,
            "taskId": task.id,
            "channel": claimed.channel,
            "chat": claimed.chat_id,
        }
        started = time.perf_counter()
        error: str | None
        try:
            session = await self.pool.ensure(agent.id)
            result = await session.run(task, timeout=agent.task_timeout)
            text, error = result.text, result.error
        except TimeoutError:
            error = f"no answer within {agent.task_timeout:.0f}s"
        except (AgentGone, ClawpenError) as exc:
            error = str(exc)
        duration = time.perf_counter() - started
        self.log.info(
            "task_executed",
            duration=round(duration, 4),
            success=error is None,
            error=error,
            **context,
        )
        self.metrics.tasks.labels(agent.id, "ok" if error is None else "error").inc()
        self.metrics.task_seconds.labels(agent.id).observe(duration)
        if error is not None:
            text = f"Sorry, I could not answer that: {error}"
        reply = self.store.finish_task(task.id, text, error)
        await self.outbox.deliver(reply)
