"""The way through: each agent's worker claims its next task, runs it, and commits the outcome.

Every step is committed before the next begins, so a crash anywhere resumes from the store.
Each agent has one worker (``Worker.run_agent``): it claims tasks (a crashed owner's first,
then the oldest waiting conversation's queued messages, batched) and runs up to the agent's
``max_parallel`` of them at once, each of a different conversation: the store never hands out
a conversation that has a task at work, so one conversation's tasks run in order, and messages
that arrive while its task works ride on its next turn. A task whose agent dies is retried a bounded
number of times, and so is one that was cut short by the orchestrator's own death; after the
last try the user is told. While it works the chat shows a typing indicator; when idle for the
agent's ``pause_after`` it freezes the container, and for its ``idle_timeout`` it stops it.
Anything that goes wrong on one task's path costs that task, never the process. Never silence.

The worker hears from the intake only through the ``Board`` (``board.py``); a job's run that
ends is reported through ``job_done`` (the scheduler's ``wake``), a callable it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from clawpen_agent.protocol import ChatLine, InboxFile, Task

from ..config import AgentSettings, Settings
from ..config.skills import read_skills, skills_prompt
from ..door.server import AgentGone
from ..errors import ClawpenError, DockerUnavailable, StoreRejected
from ..models import JOB_CHANNEL, ClaimedTask, Reply
from ..obs.logging import get_logger
from ..obs.metrics import Metrics
from ..obs.tracing import NO_TRACING, Tracing
from ..retry import AGENT
from ..runtime.pool import AgentPool
from ..store import Store, until_written
from .board import Board, Leases
from .inbox import with_files
from .outbox import Outbox
from .text import reply_text
from .voice import Transcriber, untranscribed

MAX_TASK_ATTEMPTS = 3  # tries of the agent at one task (a container that died takes one)
MAX_RESUMES = 5  # takeovers of one task after the orchestrator died holding it
BATCH_WAIT = 0.05  # seconds a worker waits at most for messages being committed to land
TYPING_EVERY = 4.0  # seconds between "typing..." signals (Telegram shows one for 5)
# an answer this quick needs no "typing...": the answer itself arrives (and a burst of quick
# tasks does not cost the platform a call each)
TYPING_AFTER = 1.0
T = TypeVar("T")
TIMEOUT_GRACE = 15.0  # seconds past task_timeout before the container is stopped: the agent
# stops itself at task_timeout with a message saying so; this is the backstop


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        pool: AgentPool,
        outbox: Outbox,
        metrics: Metrics,
        leases: Leases,
        board: Board,
        job_done: Callable[[], None] = lambda: None,
        tracing: Tracing = NO_TRACING,
        clock: Callable[[], float] = time.time,
        review_mounts: Callable[[str, int], Awaitable[list[str]]] | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        # after each task: the agent's writes to staged mounts, asked about (approvals)
        self.review_mounts = review_mounts
        self.settings = settings
        self.store = store
        self.pool = pool
        self.outbox = outbox
        self.metrics = metrics
        self.leases = leases
        self.board = board
        self.job_done = job_done  # a job's run ended (the scheduler looks at its jobs again)
        self.tracing = tracing
        self.clock = clock
        self.transcriber = transcriber  # voice notes to text, when configured
        self.log = get_logger()

    async def run_agent(self, agent_id: str) -> None:
        """The agent's worker, for as long as the orchestrator runs. Tasks left unfinished by a
        crash are claimed first; when idle for the agent's ``idle_timeout`` it stops the
        container."""
        agent = self.settings.agent(agent_id)
        wakeup = self.board.wakeups[agent_id]
        if agent.warm:
            with contextlib.suppress(ClawpenError):
                await self.pool.ensure(agent_id)
        at_work: set[asyncio.Task[None]] = set()

        def ended(done: asyncio.Task[None]) -> None:
            at_work.discard(done)
            wakeup.set()  # a lane is free, and its conversation may have more waiting

        async with asyncio.TaskGroup() as lanes:
            while True:
                wakeup.clear()
                await self.board.arriving[agent_id].landed(BATCH_WAIT)
                while len(at_work) < agent.max_parallel:
                    task = await self._claim(agent_id)
                    if task is None:
                        break
                    lane = lanes.create_task(self.execute(task))
                    at_work.add(lane)
                    lane.add_done_callback(ended)
                if at_work:
                    await wakeup.wait()
                else:
                    await self._idle(agent_id, wakeup)

    async def _idle(self, agent_id: str, wakeup: asyncio.Event) -> None:
        """Wait for work. Idle for ``pause_after`` its container is frozen (where the runtime
        can: no CPU, memory kept, thawed in milliseconds by the next task); idle for
        ``idle_timeout`` it is stopped (unless the agent is ``warm``)."""
        agent = self.settings.agent(agent_id)
        stop_after = None if agent.warm or not agent.idle_timeout else agent.idle_timeout
        pause_after = agent.pause_after if self.pool.can_pause else 0
        if pause_after and (stop_after is None or pause_after < stop_after):
            try:
                async with asyncio.timeout(pause_after):
                    await wakeup.wait()
                return
            except TimeoutError:
                await self.pool.pause(agent_id)
            if stop_after is not None:
                stop_after -= pause_after
        try:
            async with asyncio.timeout(stop_after):
                await wakeup.wait()
        except TimeoutError:
            if agent_id in self.pool.containers:
                await self.pool.stop(agent_id, "idle")
            await wakeup.wait()

    async def _claim(self, agent_id: str) -> ClaimedTask | None:
        def claim() -> Awaitable[ClaimedTask | None]:
            now = self.clock()
            return self.store.claim_next_task(agent_id, self.leases.lease(now), now)

        return await until_written(claim, "claim")

    async def execute(self, claimed: ClaimedTask) -> None:
        """Run one task to its reply. Whatever happens in between, the task ends with a reply
        committed (an answer or an apology), except when the orchestrator itself is stopping:
        then it is handed back, to run again at the next start."""
        context = {
            "agentId": claimed.agent_id,
            "taskId": claimed.id,
            "channel": claimed.address.channel,
            "chat": claimed.address.chat,
        }
        started = time.perf_counter()
        text, error, attempts = "", None, claimed.attempts
        agent_times: dict[str, float] = {}
        stop = self.board.started(claimed)
        try:
            if claimed.resumed:
                self.log.info("task_resumed", resumes=claimed.resumes, **context)
            if claimed.resumes >= MAX_RESUMES:
                error = (
                    f"I started on it {claimed.resumes} times and was interrupted every time,"
                    " so I gave it up"
                )
            else:
                async with self._typing(claimed):
                    with self._trace_task(claimed):
                        text, error, attempts, agent_times = await self._run(claimed, stop, context)
                    if self.review_mounts is not None:
                        notes = await self.review_mounts(claimed.agent_id, claimed.id)
                        text = "\n\n".join(part for part in [text, *notes] if part)
            text = reply_text(text, error, _job_of(claimed))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must cost one answer, not the process
            self.log.exception("task_failed", **context)
            error = f"internal error ({type(exc).__name__}); see the orchestrator's log"
            text = reply_text("", error, _job_of(claimed))
        finally:
            self.board.ended(claimed)
        duration = time.perf_counter() - started
        self.log.info(
            "task_executed",
            duration=round(duration, 4),
            success=error is None,
            error=error,
            attempts=attempts,
            **agent_times,
            **context,
        )
        self.metrics.tasks.labels(claimed.agent_id, "ok" if error is None else "error").inc()
        self.metrics.task_seconds.labels(claimed.agent_id).observe(duration)
        notices = self.board.take_notices(claimed.agent_id)
        text = "\n\n".join(part for part in [text, *notices] if part)
        await self._finish(claimed, text, error, context)

    @contextlib.asynccontextmanager
    async def _typing(self, claimed: ClaimedTask) -> AsyncIterator[None]:
        """The chat shows that the agent is at work, for as long as it is."""

        shown = False

        async def keep_typing() -> None:
            nonlocal shown
            await asyncio.sleep(TYPING_AFTER)
            while True:
                if not self.board.awaiting.get(claimed.id):  # the card says it waits
                    shown = True
                    await self.outbox.typing(claimed.address, claimed.reply_to, True)
                await asyncio.sleep(TYPING_EVERY)

        indicator = asyncio.create_task(keep_typing())
        try:
            yield
        finally:
            indicator.cancel()
            if shown:
                await asyncio.shield(self.outbox.typing(claimed.address, claimed.reply_to, False))

    async def _run(
        self, claimed: ClaimedTask, stop: asyncio.Event, context: dict[str, object]
    ) -> tuple[str, str | None, int, dict[str, float]]:
        """Hand the task to the agent, starting its container if need be, retrying when it
        dies; returns (text, error, attempts, the agent's own timings)."""
        agent = self.settings.agent(claimed.agent_id)
        lines = [ChatLine(s, t) for s, t in zip(claimed.senders, claimed.texts, strict=True)]
        files: list[InboxFile] = []
        if claimed.has_files:
            stored = await until_written(lambda: self.store.task_files(claimed.id), "files")
            voice = (
                await self.transcriber.notes(stored)
                if self.transcriber is not None
                else untranscribed(stored)
            )
            lines, files = with_files(lines, claimed.platform_ids, stored, voice)
        conversation = str(claimed.address)
        number = await until_written(
            lambda: self.store.session_number(agent.id, conversation), "session"
        )
        task = Task(
            id=claimed.id,
            conversation=conversation,
            lines=lines,
            model=agent.model or self.settings.model.name,
            system_prompt=self._system_prompt(agent),
            max_tokens=agent.max_tokens or self.settings.model.max_tokens,
            files=files,
            session=number,
            max_steps=agent.max_steps,
            max_task_tokens=agent.max_task_tokens or 0,
            time_limit=agent.task_timeout,
            context_tokens=agent.context_tokens,
            trace=self.tracing.traceparent(),
            mcp_servers=[
                {"name": s.name, "remote": True}
                if s.remote
                else {"name": s.name, "command": list(s.command or []), "env": dict(s.env)}
                for s in agent.mcp_servers
            ],
        )
        attempts = claimed.attempts
        while True:
            try:
                async with self.pool.working(agent.id):
                    session = await self.pool.ensure(agent.id)
                    self.log.debug("task_handed", platformIds=list(claimed.platform_ids), **context)
                    timeout = agent.task_timeout + TIMEOUT_GRACE
                    # approvals move it while a tool call waits for a person (board.extend)
                    async with asyncio.timeout(timeout) as deadline:
                        self.board.deadlines[claimed.id] = deadline
                        try:
                            result = await self._unless_stopped(stop, session.run(task, None))
                        finally:
                            self.board.deadlines.pop(claimed.id, None)
                if result is None:
                    await self._halt(claimed, "stopped by the user")
                    return "", "you stopped it with /stop", attempts, {}
                return result.text, result.error, attempts, _agent_times(result.extra)
            except TimeoutError:
                await self._halt(claimed, "task timeout")
                error = (
                    f"it ran past the limit of {agent.task_timeout:.0f}s per task (task_timeout),"
                    " so I stopped it"
                )
                return "", error, attempts, {}
            except asyncio.CancelledError:
                await self._hand_back(claimed)
                raise
            except (AgentGone, DockerUnavailable) as exc:
                if attempts >= MAX_TASK_ATTEMPTS:
                    error = f"the agent failed {attempts} times on this ({exc.args[0]})"
                    return "", error, attempts, {}
                attempts = await until_written(
                    lambda: self.store.retry_task(task.id, self.leases.lease()), "retry"
                )
                delay = AGENT.delay(attempts - 2)
                self.log.warning(
                    "task_retry", attempt=attempts, error=str(exc), retryIn=delay, **context
                )
                await asyncio.sleep(delay)
            except ClawpenError as exc:
                return "", str(exc), attempts, {}

    async def _halt(self, claimed: ClaimedTask, reason: str) -> None:
        """Stop one task and no other: inside the container (the light engine kills its tools'
        processes) while the agent is at other tasks too; else the container, as ever, which
        also ends whatever the task left running."""
        agent = self.settings.agent(claimed.agent_id)
        others = [t for t in self.board.at_work(agent.id) if t.id != claimed.id]
        if others and agent.engine == "light":
            self.log.info("task_halted", agentId=agent.id, taskId=claimed.id, reason=reason)
            await self.pool.sessions[agent.id].stop_task(claimed.id)
        else:
            await self.pool.stop(agent.id, reason)

    def _system_prompt(self, agent: AgentSettings) -> str:
        """The configured prompt and what the agent's skills are (names, descriptions, where:
        the bodies stay in their folders). Read at each task, so an edited description shows;
        a skill broken since the start is left out and logged, never the task's end."""
        try:
            skills = skills_prompt(read_skills(agent.skills))
        except ValueError as exc:
            self.log.error("skill_unreadable", agentId=agent.id, error=str(exc))
            skills = ""
        return "\n\n".join(part for part in (agent.system_prompt, skills) if part)

    async def _unless_stopped(self, stopped: asyncio.Event, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None when /stop came first (``work`` is then cancelled)."""
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                return job.result()
            return None
        finally:
            for pending in (job, stop):
                pending.cancel()
            await asyncio.gather(job, stop, return_exceptions=True)

    async def _finish_once(self, task_id: int, text: str, error: str | None) -> Reply | None:
        now = self.clock()
        return await self.store.finish_task(task_id, text, error, self.leases.lease(now), now)

    async def _hand_back(self, claimed: ClaimedTask) -> None:
        """Stopping (not crashing): give the task back without counting this try, so a few
        restarts during a long task do not make it look like a poison one."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self.store.release_task(claimed.id, self.leases.owner))

    async def _finish(
        self, claimed: ClaimedTask, text: str, error: str | None, context: dict[str, object]
    ) -> None:
        """Commit the outcome and its reply; if the store refuses this reply for good, commit
        a plain apology instead, so the user still hears from us."""
        for answer in (text, "Sorry, I could not store my answer to that; please ask again."):
            try:
                reply = await until_written(
                    partial(self._finish_once, claimed.id, answer, error), "reply"
                )
            except StoreRejected as exc:
                self.log.error("reply_unstorable", error=str(exc), **context)
                error = error or "the answer could not be stored"
                continue
            if reply is None:
                self.log.warning("task_taken_over", **context)
            # a job's answer goes to its deliver_to, not to its own conversation
            self.outbox.notify(claimed.address.channel if reply is None else reply.address.channel)
            if claimed.address.channel == JOB_CHANNEL:
                self.job_done()
            return

    # -- tracing (no-ops unless tracing is on) ----------------------------------------------

    def _trace_task(self, claimed: ClaimedTask) -> contextlib.AbstractContextManager[Any]:
        """The task, under its (first) message's span; its reply's delivery goes under it."""
        address = claimed.address
        keys = [("message", address.channel, address.chat, p) for p in claimed.platform_ids]
        for key in keys[1:]:
            self.tracing.forget(key)
        return self.tracing.span(
            "task",
            parent=keys[0] if keys else None,
            attributes={"clawpen.agent": claimed.agent_id, "clawpen.task": claimed.id},
            remember=("task", claimed.id),
        )


def _job_of(claimed: ClaimedTask) -> str | None:
    return claimed.address.chat if claimed.address.channel == JOB_CHANNEL else None


def _agent_times(extra: dict[str, object]) -> dict[str, float]:
    """When the agent (its own wall clock, which it shares with us) got and answered the task."""
    received, answered = extra.get("received"), extra.get("answered")
    if isinstance(received, float) and isinstance(answered, float):
        return {
            "agentReceived": received,
            "agentAnswered": answered,
            "agentTime": round(answered - received, 4),
        }
    return {}
