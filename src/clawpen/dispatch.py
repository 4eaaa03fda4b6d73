"""The message path, in order: accept -> route -> queue -> agent -> reply -> outbox.

Every step is committed before the next begins, so a crash anywhere resumes from the store.
Each agent has one worker: it takes one task at a time, and messages that arrive while it works
are batched into its next turn. A task whose agent dies is retried a bounded number of times;
after the last try the user is told. Never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from clawpen_agent.protocol import ChatLine, Task

from .agentapi import AgentGone
from .agents import AgentPool
from .config import Settings
from .errors import ClawpenError, DockerUnavailable
from .logging import get_logger
from .metrics import Metrics
from .models import ClaimedTask, InboundMessage, Rejection, Route
from .outbox import Outbox, backoff
from .router import route
from .store import Store, until_written

MAX_TASK_ATTEMPTS = 3
MAX_REPLY = 64_000  # characters: a runaway agent must not flood a chat with thousands of messages


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
        store.sync_config_pairings({p.channel: p.agent for p in settings.pairings})
        self.pairings = store.pairings()
        self.agent_ids = frozenset(a.id for a in settings.agents)
        self._wakeups = {a: asyncio.Event() for a in self.agent_ids}

    async def accept(self, message: InboundMessage) -> Route | Rejection | None:
        """Commit and route one inbound message. Returns after the commit: only then may the
        platform be told we have it. Raises StoreError when the store cannot be written."""
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
            if decision.answer:
                self.outbox.notify(message.channel)
            return decision
        self.log.info("message_routed", messageId=row, agentId=decision.agent_id, **context)
        self.metrics.messages.labels(message.channel, "routed").inc()
        self._wakeups[decision.agent_id].set()
        return decision

    def pair(self, address: str, agent_id: str) -> None:
        """Let chat ``address`` (``platform:chat_id``) talk to ``agent_id`` from now on."""
        platform = address.split(":", 1)[0]
        if ":" not in address or platform == "cli" or not address.split(":", 1)[1]:
            raise ClawpenError(f"{address!r} is not a chat address", "write it as telegram:CHAT_ID")
        if getattr(self.settings.channels, platform, None) is None:
            raise ClawpenError(f"channel {platform!r} is not configured", "add it under channels:")
        if agent_id not in self.agent_ids:
            known = ", ".join(sorted(self.agent_ids))
            raise ClawpenError(f"no agent {agent_id!r}", f"use one of: {known}")
        self.store.pair(address, agent_id)
        self.pairings = self.store.pairings()
        self.log.info("chat_paired", chat=address, agentId=agent_id)

    def unpair(self, address: str) -> bool:
        removed = self.store.unpair(address)
        self.pairings = self.store.pairings()
        if removed:
            self.log.info("chat_unpaired", chat=address)
        return removed

    async def run_agent(self, agent_id: str) -> None:
        """The agent's worker, for as long as the orchestrator runs. It first finishes what was
        in flight before a restart, then takes queued work; when idle for the agent's
        ``idle_timeout`` it stops the container."""
        agent = self.settings.agent(agent_id)
        wakeup = self._wakeups[agent_id]
        for unfinished in await until_written(lambda: self.store.running_tasks(agent_id), "resume"):
            self.log.info("task_resumed", agentId=agent_id, taskId=unfinished.id)
            await self.execute(unfinished)
        if agent.warm:
            with contextlib.suppress(ClawpenError):
                await self.pool.ensure(agent_id)
        while True:
            wakeup.clear()
            while (task := await self._claim(agent_id)) is not None:
                await self.execute(task)
            idle = None if agent.warm or not agent.idle_timeout else agent.idle_timeout
            try:
                async with asyncio.timeout(idle):
                    await wakeup.wait()
            except TimeoutError:
                if agent_id in self.pool.containers:
                    await self.pool.stop(agent_id, "idle")
                await wakeup.wait()

    async def _claim(self, agent_id: str) -> ClaimedTask | None:
        return await until_written(lambda: self.store.claim_next_task(agent_id), "claim")

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
        attempts = claimed.attempts
        text, error = "", None
        agent_seconds: float | None = None
        while True:
            try:
                async with self.pool.working(agent.id):
                    session = await self.pool.ensure(agent.id)
                    result = await session.run(task, timeout=agent.task_timeout)
                text, error = result.text, result.error
                agent_seconds = _agent_seconds(result.extra)
                break
            except TimeoutError:
                error = f"no answer within {agent.task_timeout:.0f}s"
                await self.pool.stop(agent.id, "task timeout")
                break
            except (AgentGone, DockerUnavailable) as exc:
                if attempts >= MAX_TASK_ATTEMPTS:
                    error = f"the agent failed {attempts} times on this ({exc.args[0]})"
                    break
                attempts = await until_written(lambda: self.store.retry_task(task.id), "retry")
                delay = backoff(attempts - 2, rand=1.0)
                self.log.warning(
                    "task_retry", attempt=attempts, error=str(exc), retryIn=delay, **context
                )
                await asyncio.sleep(delay)
            except ClawpenError as exc:
                error = str(exc)
                break
            except Exception as exc:  # a bug must cost one answer, not crash-loop the process
                self.log.exception("task_failed", **context)
                error = f"internal error ({type(exc).__name__}); see the orchestrator's log"
                break
        duration = time.perf_counter() - started
        self.log.info(
            "task_executed",
            duration=round(duration, 4),
            agentTime=agent_seconds,
            success=error is None,
            error=error,
            attempts=attempts,
            **context,
        )
        self.metrics.tasks.labels(agent.id, "ok" if error is None else "error").inc()
        self.metrics.task_seconds.labels(agent.id).observe(duration)
        if error is not None:
            text = f"Sorry, I could not answer that: {error}"
        if len(text) > MAX_REPLY:
            text = text[:MAX_REPLY] + f"\n[reply cut at {MAX_REPLY} characters]"
        await until_written(lambda: self.store.finish_task(task.id, text, error), "reply")
        self.outbox.notify(claimed.channel)


def _agent_seconds(extra: dict[str, object]) -> float | None:
    """Time the agent itself spent on a task, from the wall-clock times it reports."""
    received, answered = extra.get("received"), extra.get("answered")
    if isinstance(received, float) and isinstance(answered, float):
        return round(answered - received, 4)
    return None
