"""The way in: a message is accepted, cleaned, routed and committed, and its agent woken.

``Intake.accept`` is what a channel's adapter is handed (through ``ChannelInbox``): it cleans
the text (``text.py``), asks the router (``router.py``, pure) and commits the message with its
decision and its files before it returns, so that the platform is told we have it only then.
In-chat commands (``commands.py``) are answered here and never reach an agent. Unpaired chats
are strangers: who, when and how much is recorded, a few times an hour per chat; on a channel
that pairs by code (``pairing.py``) the first is answered with a one-time code. Pairing and
unpairing, and the messages an agent sends on its own, are committed here too.

What the agent's worker needs to hear (work is waiting, a burst is arriving, /stop) goes
through the ``Board`` both are given (``board.py``); the intake never holds a worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..channels.registry import address_problem, read_chat
from ..config import Settings
from ..errors import ClawpenError, StoreRejected, StoreUnavailable
from ..models import (
    Address,
    CardTap,
    Decision,
    DeliveryStatus,
    InboundMessage,
    OutboundFile,
    Rejection,
    Reply,
    Route,
    Stranger,
    TapOutcome,
)
from ..obs.logging import get_logger
from ..obs.metrics import Metrics
from ..obs.tracing import NO_TRACING, Tracing
from ..ratelimit import KeyedBuckets
from ..store import Store
from . import commands, pairing
from .approvals import CODE, Approvals
from .board import Board, Leases
from .outbox import Outbox
from .router import MAX_TEXT, route
from .text import clean_text, clip, reply_text

STRANGERS_PER_HOUR = 10  # per unpaired chat: what is recorded of it (the rest is only counted)


class ChannelInbox:
    """What a channel's adapter is handed as ``accept``: it commits the channel's messages, and
    takes the platform's later word on the replies (``channels.base.report_status``)."""

    def __init__(
        self,
        intake: Intake,
        channel: str,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.intake = intake
        self.channel = channel
        self.on_state = on_state  # the adapter's word on its platform: state, cause

    async def channel_state(self, state: str, error: str) -> None:
        if self.on_state is not None:
            self.on_state(state, error)

    async def connected(self) -> None:
        """An adapter in this process talked to its platform (``channels.base.connected``)."""
        await self.channel_state("running", "")

    async def __call__(self, message: InboundMessage) -> Decision | None:
        return await self.intake.accept(message)

    async def delivery_status(self, status: DeliveryStatus) -> None:
        await self.intake.delivery_status(self.channel, status)

    async def tap(self, tap: CardTap) -> TapOutcome:
        """A button pressed in this channel (``channels.base.report_tap``)."""
        if self.intake.approvals is None or tap.address.channel != self.channel:
            return TapOutcome("This card is not known here.", "")
        return await self.intake.approvals.tap(tap)


class Intake:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        outbox: Outbox,
        metrics: Metrics,
        leases: Leases,
        board: Board,
        admit: Callable[[], None] = lambda: None,
        tracing: Tracing = NO_TRACING,
        clock: Callable[[], float] = time.time,
        approvals: Approvals | None = None,
    ) -> None:
        self.approvals = approvals  # a card's code typed as a message is its tap
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.metrics = metrics
        self.leases = leases
        self.board = board
        # raises StoreUnavailable while new work must wait (disk.DiskGuard.admit)
        self.admit = admit
        self.tracing = tracing
        self.clock = clock
        self.log = get_logger()
        self.pairings: dict[Address, str] = {}  # chat (no thread) -> agent
        self.code_channels = frozenset(
            name
            for name, channel in settings.channel_settings().items()
            if channel.unknown_senders == "code"
        )
        self.every_message = frozenset(p.address for p in settings.pairings if not p.mentions_only)
        self.agent_ids = board.agent_ids
        self._strangers: KeyedBuckets[str] = KeyedBuckets(STRANGERS_PER_HOUR / 3600, 3)

    async def open(self) -> None:
        """Restore the config file's pairings (those made at runtime are kept) and load them."""
        pairings = {p.address: p.agent for p in self.settings.pairings}
        await self.store.sync_config_pairings(pairings, self.clock())
        self.pairings = await self.store.pairings()

    def answering(self, agent_id: str, task_id: int | None = None) -> Address | None:
        """The chat of the agent's task ``task_id`` (its tools answer there), if it is at work
        on it; without an id, that of its only task at work, if it has just one."""
        tasks = self.board.running.get(agent_id, {})
        if task_id is not None:
            task = tasks.get(task_id)
        else:
            task = next(iter(tasks.values())) if len(tasks) == 1 else None
        return None if task is None else task.address

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
            if address.channel in self.code_channels and address.chat_only not in self.pairings:
                await self._offer_code(message, now)
            return decision
        if not (isinstance(decision, Rejection) and decision.ignored):
            typed = await self._typed_code(message)
            if typed is not None:
                decision = typed
        if isinstance(decision, Route):
            self.admit()  # the disk is nearly full: the platform keeps the message for later
        command = commands.parse(message.text) if isinstance(decision, Route) else None
        if isinstance(decision, Route) and command is not None:
            return await self._command(command, message, decision, now)
        arriving = self.board.arriving[decision.agent_id] if isinstance(decision, Route) else None
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
        self.board.wake(decision.agent_id)
        return decision

    async def _typed_code(self, message: InboundMessage) -> Rejection | None:
        """A message that is exactly a card's button code, in a chat that card went to: the
        tap of its sender where the platform has no buttons (e-mail, the CLI) or they were
        not used. It is answered here, and never reaches the agent."""
        text = message.text.strip().lower()  # a phone capitalises the first letter: "Ok-..."
        if self.approvals is None or not CODE.fullmatch(text):
            return None
        approval = await self.store.approval_by_code(text.split("-", 1)[1])
        if approval is None:
            return None
        cards = await self.store.approval_cards(approval.id)
        if all(chat.chat_only != message.address.chat_only for chat, _ in cards):
            return None
        tap = CardTap(message.address, message.sender_id, text, "")
        outcome = await self.approvals.tap(tap)
        answer = "\n\n".join(part for part in (outcome.notice, outcome.card) if part)
        return Rejection("a card's code", answer=answer)

    async def _command(
        self, command: str, message: InboundMessage, decision: Route, now: float
    ) -> Decision | None:
        """An in-chat command (``commands.py``): acted on and answered here, committed with its
        answer through the ordinary reply path; the model never sees it."""
        agent_id = decision.agent_id
        context = {"channel": message.address.channel, "chat": message.address.chat}
        running = self.board.working_on(agent_id, message.address)
        stopping = running is not None
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
        if command == "stop" and running is not None:
            self.board.stop(running.id)
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

    async def approve_code(self, code: str, agent_id: str) -> Address:
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
        self.outbox.notify(chat.channel)
        self.log.info("chat_paired", chat=chat.chat_address, agentId=agent_id, by="code")
        return chat

    def _check_agent(self, agent_id: str) -> None:
        if agent_id not in self.agent_ids:
            known = ", ".join(sorted(self.agent_ids))
            raise ClawpenError(f"no agent {agent_id!r}", f"use one of: {known}")

    def pairings_written(self) -> dict[str, str]:
        """The pairings as people write them (``channel:chat`` -> agent), in order."""
        return {chat.chat_address: agent for chat, agent in sorted(self.pairings.items())}

    def read_chat(self, text: str) -> Address:
        """A chat the CLI or the dashboard named, read and checked against the configured
        channels: ClawpenError naming the problem."""
        try:
            return read_chat(text, self.settings.channel_settings())
        except ValueError as exc:
            raise ClawpenError(str(exc)) from None

    async def pair(self, address: Address, agent_id: str) -> None:
        """Let chat ``address`` talk to ``agent_id`` from now on."""
        problem = address_problem(address, self.settings.channel_settings())
        if problem is not None:
            raise ClawpenError(problem)
        self._check_agent(agent_id)
        await self.store.pair(address, agent_id, self.clock())
        self.pairings = await self.store.pairings()
        self.log.info("chat_paired", chat=address.chat_address, agentId=agent_id)

    async def unpair(self, address: Address) -> bool:
        removed = await self.store.unpair(address)
        self.pairings = await self.store.pairings()
        if removed:
            self.log.info("chat_unpaired", chat=address.chat_address)
        return removed

    async def send_message(self, agent_id: str, address: Address, text: str) -> Reply | None:
        """A message an agent sends on its own (``tools/send.py`` decided it may): committed as
        a reply, then delivered by the outbox like any other. None when the chat was unpaired
        from the agent meanwhile (the store checks in the commit's transaction)."""
        now = self.clock()
        reply = await self.store.record_agent_message(
            agent_id, address, reply_text(text), self.leases.lease(now), now
        )
        if reply is not None:
            self.outbox.notify(address.channel)
        return reply

    async def send_file(
        self, agent_id: str, file: OutboundFile, task_id: int | None = None
    ) -> Reply | None:
        """A file an agent sends back (``tools/files.py`` checked it): committed as a reply
        carrying it, then delivered by the outbox in order with the chat's other replies."""
        now = self.clock()
        tasks = self.board.running.get(agent_id, {})
        running = tasks.get(task_id) if task_id is not None else None
        if running is None and len(tasks) == 1:
            running = next(iter(tasks.values()))
        # a task taken over after a crash runs again, and may send the same file again: once
        once = None
        if running is not None:
            digest = hashlib.sha256(file.name.encode() + b"\0" + file.data).hexdigest()
            once = f"{running.id}:{digest}"
        reply = await self.store.record_agent_file(
            agent_id,
            replace(file, caption=reply_text(file.caption)),
            self.leases.lease(now),
            now,
            once,
        )
        if reply is not None:
            self.outbox.notify(file.address.channel)
        return reply

    # -- tracing (no-ops unless tracing is on) ----------------------------------------------

    def _trace_receipt(self, message: InboundMessage) -> contextlib.AbstractContextManager[Any]:
        """From the message's arrival to its commit; its task's span is its child."""
        address = message.address
        return self.tracing.span(
            "message.receive",
            attributes={"clawpen.channel": address.channel, "clawpen.chat": address.chat},
            remember=("message", address.channel, address.chat, message.platform_id),
        )
