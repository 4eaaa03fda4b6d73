"""The message path, in order: accept -> route -> queue -> agent -> reply -> outbox.

Every step is committed before the next begins, so a crash anywhere resumes from the store.
Each agent has one worker: it takes one task at a time, and messages that arrive while it works
are batched into its next turn. A task whose agent dies is retried a bounded number of times,
and so is one that was cut short by the orchestrator's own death; after the last try the user
is told. Anything that goes wrong on one task's path costs that task, never the process.
Never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from clawpen_agent.protocol import ChatLine, InboxFile, Task

from ..channels.registry import address_problem
from ..config import Settings
from ..door.server import AgentGone
from ..errors import ClawpenError, DockerUnavailable, StoreRejected, StoreUnavailable
from ..models import (
    JOB_CHANNEL,
    Address,
    ClaimedTask,
    Decision,
    DeliveryStatus,
    InboundMessage,
    Rejection,
    Reply,
    Route,
    Stranger,
)
from ..obs.logging import get_logger
from ..obs.metrics import Metrics
from ..obs.redact import SECRETS
from ..obs.tracing import NO_TRACING, Tracing
from ..ratelimit import KeyedBuckets
from ..retry import AGENT
from ..runtime.pool import AgentPool
from ..store import Lease, Store, until_written
from . import commands, pairing
from .inbox import with_files
from .outbox import Outbox
from .router import MAX_TEXT, route
from .text import clean_text, clip

MAX_TASK_ATTEMPTS = 3  # tries of the agent at one task (a container that died takes one)
MAX_RESUMES = 5  # takeovers of one task after the orchestrator died holding it
MAX_REPLY = 64_000  # characters: a runaway agent must not flood a chat with thousands of messages
BATCH_WAIT = 0.05  # seconds a worker waits at most for messages being committed to land
TYPING_EVERY = 4.0  # seconds between "typing..." signals (Telegram shows one for 5)
# an answer this quick needs no "typing...": the answer itself arrives (and a burst of quick
# tasks does not cost the platform a call each)
TYPING_AFTER = 1.0
T = TypeVar("T")
STRANGERS_PER_HOUR = 10  # per unpaired chat: what is recorded of it (the rest is only counted)
TIMEOUT_GRACE = 15.0  # seconds past task_timeout before the container is stopped: the agent
# stops itself at task_timeout with a message saying so; this is the backstop


class Leases:
    """This orchestrator's name on the work it claims, and how long a claim lasts unrenewed."""

    def __init__(self, owner: str, seconds: float = 60.0, clock: Callable[[], float] = time.time):
        self.owner = owner
        self.seconds = seconds
        self.clock = clock

    def lease(self, now: float | None = None) -> Lease:
        return Lease(self.owner, (self.clock() if now is None else now) + self.seconds)


class Arrivals:
    """Counts messages on their way into the store for one agent (``with arrivals:``), and
    tells when none is (``landed``). A lone message is committed before its worker wakes, so
    this costs it nothing; in a burst, the worker's next turn takes the whole burst."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    def __enter__(self) -> None:
        self.count += 1
        self._none.clear()

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if not self.count:
            self._none.set()

    async def landed(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._none.wait()


class ChannelInbox:
    """What a channel's adapter is handed as ``accept``: it commits the channel's messages, and
    takes the platform's later word on the replies (``channels.base.report_status``)."""

    def __init__(self, dispatcher: Dispatcher, channel: str) -> None:
        self.dispatcher = dispatcher
        self.channel = channel

    async def __call__(self, message: InboundMessage) -> Decision | None:
        return await self.dispatcher.accept(message)

    async def delivery_status(self, status: DeliveryStatus) -> None:
        await self.dispatcher.delivery_status(self.channel, status)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        pool: AgentPool,
        outbox: Outbox,
        metrics: Metrics,
        leases: Leases,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.outbox = outbox
        self.metrics = metrics
        self.leases = leases
        self.clock = clock
        self.log = get_logger()
        self.pairings: dict[str, str] = {}
        self.code_channels = frozenset(
            name
            for name, channel in settings.channel_settings().items()
            if channel.unknown_senders == "code"
        )
        self.every_message = frozenset(p.channel for p in settings.pairings if not p.mentions_only)
        # raises StoreUnavailable while new work must wait (disk.DiskGuard.admit); set by app
        self.admit: Callable[[], None] | None = None
        self.agent_ids = frozenset(a.id for a in settings.agents)
        self._wakeups = {a: asyncio.Event() for a in self.agent_ids}
        # messages routed to an agent and being committed right now: its worker lets them land
        # before it claims, so that a burst rides on one turn instead of one turn each
        self._arriving = {a: Arrivals() for a in self.agent_ids}
        self._strangers: KeyedBuckets[str] = KeyedBuckets(STRANGERS_PER_HOUR / 3600, 3)
        self.running: dict[str, ClaimedTask] = {}  # agent id -> the task it works on now
        self.job_done: Callable[[], None] = lambda: None  # a job's run ended (the scheduler's)
        self._notices: dict[str, list[str]] = {}  # agent -> said with its task's reply
        self._stops = {a: asyncio.Event() for a in self.agent_ids}  # /stop for the running task
        self.tracing: Tracing = NO_TRACING

    def wake(self, agent_id: str) -> None:
        """The agent has new work in the store (a job's run was queued for it)."""
        if agent_id in self._wakeups:
            self._wakeups[agent_id].set()

    def notice(self, agent_id: str, text: str) -> None:
        """Something the user must hear about the agent (its budget nearly spent): added to
        the reply of the task it is working on, or of its next one."""
        self._notices.setdefault(agent_id, []).append(text)

    async def open(self) -> None:
        """Restore the config file's pairings (those made at runtime are kept) and load them."""
        pairings = {p.channel: p.agent for p in self.settings.pairings}
        await self.store.sync_config_pairings(pairings, self.clock())
        self.pairings = await self.store.pairings()

    # -- in -------------------------------------------------------------------------------------

    async def accept(self, message: InboundMessage) -> Decision | None:
        """Commit and route one inbound message. Returns after the commit: only then may the
        platform be told we have it. Raises ``StoreUnavailable`` when the store cannot be
        written now (the platform keeps the message); a message the store refuses for good is
        logged and dropped, so that it cannot block the messages behind it."""
        now = self.clock()
        self.log.debug(
            "message_arrived",
            channel=message.address.channel,
            chat=message.address.chat,
            platformId=message.platform_id,
        )
        message = replace(
            message,
            text=clean_text(message.text),
            attachments=tuple(
                replace(f, name=clean_text(f.name), media_type=clean_text(f.media_type))
                for f in message.attachments
            ),
        )
        decision = route(message, self.pairings, self.agent_ids, self.every_message)
        message = replace(message, text=clip(message.text, MAX_TEXT))  # what is stored is capped
        address = message.address
        context = {"channel": address.channel, "chat": address.chat}
        if isinstance(decision, Rejection) and decision.ignored:
            self.log.debug("message_ignored", reason=decision.reason, **context)
            self.metrics.messages.labels(address.channel, "ignored").inc()
            return decision
        if isinstance(decision, Rejection) and decision.answer is None:
            await self._stranger(message, decision, now)
            if address.channel in self.code_channels and address.chat_address not in self.pairings:
                await self._offer_code(message, now)
            return decision
        if isinstance(decision, Route) and self.admit is not None:
            self.admit()  # the disk is nearly full: the platform keeps the message for later
        command = commands.parse(message.text) if isinstance(decision, Route) else None
        if isinstance(decision, Route) and command is not None:
            return await self._command(command, message, decision, now)
        arriving = self._arriving[decision.agent_id] if isinstance(decision, Route) else None
        try:
            with arriving or contextlib.nullcontext(), self._trace_receipt(message):
                lease = self.leases.lease(now)
                row = await self.store.record_inbound(message, decision, lease, now)
        except StoreRejected as exc:
            self.log.error("message_unstorable", error=str(exc), **context)
            self.metrics.messages.labels(address.channel, "unstorable").inc()
            return Rejection(str(exc))
        if row is None:
            self.log.info("message_duplicate", platformId=message.platform_id, **context)
            self.metrics.messages.labels(address.channel, "duplicate").inc()
            return None
        self.log.info("message_received", messageId=row, platformId=message.platform_id, **context)
        if isinstance(decision, Rejection):
            self.log.warning("message_refused", messageId=row, reason=decision.reason, **context)
            self.metrics.messages.labels(address.channel, "rejected").inc()
            self.outbox.notify(address.channel)
            return decision
        self.log.info("message_routed", messageId=row, agentId=decision.agent_id, **context)
        self.metrics.messages.labels(address.channel, "routed").inc()
        self._wakeups[decision.agent_id].set()
        return decision

    async def _command(
        self, command: str, message: InboundMessage, decision: Route, now: float
    ) -> Decision | None:
        """An in-chat command (``commands.py``): acted on and answered here, committed with its
        answer through the ordinary reply path; the model never sees it."""
        agent_id = decision.agent_id
        context = {"channel": message.address.channel, "chat": message.address.chat}
        running = self.running.get(agent_id)
        stopping = running is not None and str(running.address) == str(message.address)
        if command == "usage":
            day = now - now % 86400
            rows = await self.store.usage_by_day(day, agent_id)
            agent = self.settings.agent(agent_id)
            budget = agent.daily_token_budget or self.settings.model.daily_token_budget
            answer = commands.usage_text(agent_id, rows, budget)
        elif command == "new":
            answer = commands.new_session_text()
        elif command == "stop":
            answer = commands.stop_text(stopping)
        else:
            answer = commands.help_text()
        try:
            row = await self.store.record_command(
                message, agent_id, answer, command == "new", self.leases.lease(now), now
            )
        except StoreRejected as exc:
            self.log.error("message_unstorable", error=str(exc), **context)
            return Rejection(str(exc))
        if row is None:
            self.log.info("message_duplicate", platformId=message.platform_id, **context)
            return None
        if command == "stop" and stopping:
            self._stops[agent_id].set()
        self.log.info("command_answered", command=command, agentId=agent_id, **context)
        self.metrics.messages.labels(message.address.channel, "command").inc()
        self.outbox.notify(message.address.channel)
        return decision

    async def delivery_status(self, channel: str, status: DeliveryStatus) -> None:
        """Record what the platform said later about a reply it had taken; a failure is the
        operator's to know (a closed 24-hour window cannot be fixed by sending again)."""
        context = {"channel": channel, "chat": status.chat, "platformId": status.platform_id}
        try:
            await self.store.record_delivery_status(channel, status, self.clock())
        except (StoreUnavailable, StoreRejected) as exc:
            self.log.warning("delivery_status_unrecorded", error=str(exc), **context)
        if status.status != "failed":
            self.log.debug("reply_" + status.status, **context)
            return
        self.metrics.replies.labels(channel, "undelivered").inc()
        hint = (
            "the chat's reply window closed; the user must write first"
            if status.window_closed
            else "the platform gave up on it after taking it"
        )
        self.log.error("reply_undelivered", error=status.error, hint=hint, **context)

    async def _stranger(self, message: InboundMessage, decision: Rejection, now: float) -> None:
        """A chat that is not paired: it never reaches a model and is never answered. Who,
        when and how much is recorded (not the text), a few times an hour per chat."""
        address = message.address
        self.metrics.messages.labels(address.channel, "rejected").inc()
        self.log.warning(
            "message_rejected",
            channel=address.channel,
            chat=address.chat,
            reason=decision.reason,
            size=len(message.text),
        )
        if address.channel == "cli" or not self._strangers.allow(address.chat_address, now):
            return
        stranger = Stranger(address, message.sender_id[:200], len(message.text), now)
        with contextlib.suppress(StoreUnavailable, StoreRejected):  # a stranger is not worth a wait
            await self.store.record_stranger(stranger)

    async def _offer_code(self, message: InboundMessage, now: float) -> None:
        """An unpaired chat on a channel that pairs by code: its first message in an hour is
        answered with a one-time code for the owner to approve (never shown to a model)."""
        if not message.addressed:
            return  # chatter in a group channel: not a request to be paired
        address = message.address
        code = pairing.new_code()
        offered = await self.store.offer_pairing_code(
            message,
            pairing.code_hash(code),
            pairing.code_message(code),
            self.leases.lease(now),
            now,
            pairing.CODE_TTL,
            pairing.PER_CHAT_EVERY,
        )
        if offered:
            self.log.info("pairing_code_offered", channel=address.channel, chat=address.chat)
            self.outbox.notify(address.channel)

    async def approve_code(self, code: str, agent_id: str) -> str:
        """Pair the chat that was given ``code`` with ``agent_id``; returns that chat."""
        self._check_agent(agent_id)
        now = self.clock()
        welcome = f"Paired: this chat now talks to {agent_id}. Go ahead."
        chat = await self.store.approve_pairing_code(
            pairing.code_hash(code), agent_id, welcome, self.leases.lease(now), now
        )
        if chat is None:
            raise ClawpenError(
                "no such pairing code (or it expired, or it was used)",
                "ask the chat to write again for a new one",
            )
        self.pairings = await self.store.pairings()
        self.outbox.notify(chat.partition(":")[0])
        self.log.info("chat_paired", chat=chat, agentId=agent_id, by="code")
        return chat

    def _check_agent(self, agent_id: str) -> None:
        if agent_id not in self.agent_ids:
            known = ", ".join(sorted(self.agent_ids))
            raise ClawpenError(f"no agent {agent_id!r}", f"use one of: {known}")

    async def pair(self, address: str, agent_id: str) -> None:
        """Let chat ``address`` (``platform:chat_id``) talk to ``agent_id`` from now on."""
        problem = address_problem(address, self.settings.channel_settings())
        if problem is not None:
            raise ClawpenError(problem)
        self._check_agent(agent_id)
        await self.store.pair(address, agent_id, self.clock())
        self.pairings = await self.store.pairings()
        self.log.info("chat_paired", chat=address, agentId=agent_id)

    async def unpair(self, address: str) -> bool:
        removed = await self.store.unpair(address)
        self.pairings = await self.store.pairings()
        if removed:
            self.log.info("chat_unpaired", chat=address)
        return removed

    async def send_message(self, agent_id: str, address: Address, text: str) -> Reply | None:
        """A message an agent sends on its own (``agentsend.py`` decided it may): committed as
        a reply, then delivered by the outbox like any other. None when the chat was unpaired
        from the agent meanwhile (the store checks in the commit's transaction)."""
        now = self.clock()
        reply = await self.store.record_agent_message(
            agent_id, address, _reply_text(text, None), self.leases.lease(now), now
        )
        if reply is not None:
            self.outbox.notify(address.channel)
        return reply

    # -- to the agent and back -------------------------------------------------------------------

    async def run_agent(self, agent_id: str) -> None:
        """The agent's worker, for as long as the orchestrator runs. Tasks left unfinished by a
        crash are claimed first; when idle for the agent's ``idle_timeout`` it stops the
        container."""
        agent = self.settings.agent(agent_id)
        wakeup = self._wakeups[agent_id]
        if agent.warm:
            with contextlib.suppress(ClawpenError):
                await self.pool.ensure(agent_id)
        while True:
            wakeup.clear()
            await self._arriving[agent_id].landed(BATCH_WAIT)
            while (task := await self._claim(agent_id)) is not None:
                await self.execute(task)
                await self._arriving[agent_id].landed(BATCH_WAIT)
            idle = None if agent.warm or not agent.idle_timeout else agent.idle_timeout
            try:
                async with asyncio.timeout(idle):
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
        self.running[claimed.agent_id] = claimed
        self._stops[claimed.agent_id].clear()
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
                        text, error, attempts, agent_times = await self._run(claimed, context)
            text = _reply_text(text, error, _job_of(claimed))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must cost one answer, not the process
            self.log.exception("task_failed", **context)
            error = f"internal error ({type(exc).__name__}); see the orchestrator's log"
            text = _reply_text("", error, _job_of(claimed))
        finally:
            self.running.pop(claimed.agent_id, None)
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
        notices = self._notices.pop(claimed.agent_id, [])
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
        self, claimed: ClaimedTask, context: dict[str, object]
    ) -> tuple[str, str | None, int, dict[str, float]]:
        """Hand the task to the agent, starting its container if need be, retrying when it
        dies; returns (text, error, attempts, the agent's own timings)."""
        agent = self.settings.agent(claimed.agent_id)
        lines = [ChatLine(s, t) for s, t in zip(claimed.senders, claimed.texts, strict=True)]
        files: list[InboxFile] = []
        if claimed.has_files:
            stored = await until_written(lambda: self.store.task_files(claimed.id), "files")
            lines, files = with_files(lines, claimed.platform_ids, stored)
        conversation = str(claimed.address)
        number = await until_written(
            lambda: self.store.session_number(agent.id, conversation), "session"
        )
        task = Task(
            id=claimed.id,
            conversation=conversation,
            lines=lines,
            model=agent.model or self.settings.model.name,
            system_prompt=agent.system_prompt,
            max_tokens=agent.max_tokens or self.settings.model.max_tokens,
            files=files,
            session=number,
            max_steps=agent.max_steps,
            max_task_tokens=agent.max_task_tokens or 0,
            time_limit=agent.task_timeout,
            context_tokens=agent.context_tokens,
            trace=self.tracing.traceparent(),
        )
        attempts = claimed.attempts
        while True:
            try:
                async with self.pool.working(agent.id):
                    session = await self.pool.ensure(agent.id)
                    self.log.debug("task_handed", platformIds=list(claimed.platform_ids), **context)
                    timeout = agent.task_timeout + TIMEOUT_GRACE
                    result = await self._unless_stopped(agent.id, session.run(task, timeout))
                if result is None:
                    await self.pool.stop(agent.id, "stopped by the user")
                    return "", "you stopped it with /stop", attempts, {}
                return result.text, result.error, attempts, _agent_times(result.extra)
            except TimeoutError:
                await self.pool.stop(agent.id, "task timeout")
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

    async def _unless_stopped(self, agent_id: str, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None when /stop came first (``work`` is then cancelled)."""
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stops[agent_id].wait())
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
        for reply_text in (text, "Sorry, I could not store my answer to that; please ask again."):
            try:
                reply = await until_written(
                    partial(self._finish_once, claimed.id, reply_text, error), "reply"
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

    def _trace_receipt(self, message: InboundMessage) -> contextlib.AbstractContextManager[Any]:
        """From the message's arrival to its commit; its task's span is its child."""
        address = message.address
        return self.tracing.span(
            "message.receive",
            attributes={"clawpen.channel": address.channel, "clawpen.chat": address.chat},
            remember=("message", address.channel, address.chat, message.platform_id),
        )

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


def _reply_text(text: str, error: str | None, job: str | None = None) -> str:
    """What the user reads: the answer, or why there is none; clean, not endless, and without
    any secret value this process knows (an agent that echoes a key must not post it)."""
    if error is not None and job is not None:
        text = f"The scheduled job {job} failed: {error}"
    elif error is not None:
        text = f"Sorry, I could not answer that: {error}"
    return clip(SECRETS(clean_text(text)), MAX_REPLY, "\n[reply cut at {limit} characters]")


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
