"""Delivering committed replies: in order within a chat, chats independent of each other.

A reply is committed (leased to this orchestrator) before its first send. ``plan`` decides,
from the pending replies and the time, which reply of which chat goes now: the oldest of each
chat, if it is due (a 429 stores when it is due again) and nobody else holds it. Each chat's
delivery then runs on its own, so one chat held back by the platform never stalls another.
Before each send the chat's and the channel's rate limits are respected, so the platform rarely
has to answer 429 at all.

Before a chunk is sent it is claimed in the store, conditionally on the reply's current state
(still pending, still at that chunk, no live claim of another delivery): a delivery started from
a stale read gets no claim and sends nothing. Each chunk that the platform confirms is recorded
at once, in the same write that claims the next, so a restart resumes with the next chunk
instead of repeating the ones the user has. The one window left is between the platform's
confirmation and that commit (microseconds); a crash exactly there sends the chunk again:
at-least-once, never lost.

Answers to strangers (pairing codes) are paced on a budget of their own and start after the
paired chats' replies: a crowd of new chats never makes a paired user wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from ..channels.base import Channel, RateLimitSettings, SendError
from ..models import Address, OutboundFile, OutboundMessage, Reply
from ..obs.logging import get_logger
from ..obs.metrics import Metrics
from ..obs.tracing import NO_TRACING, Tracing
from ..ratelimit import KeyedBuckets, TokenBucket
from ..retry import PLATFORM
from ..store import Lease, Store, until_written
from .circuit import Circuit
from .split import split_text

MAX_ATTEMPTS = 8
Outcome = Literal["sent", "settled", "held"]  # how a claimed delivery ended
IDLE_RECHECK = 30.0  # seconds: look at the store again even without a wake-up


@dataclass(frozen=True)
class Plan:
    start: list[Reply]  # deliver these now: at most one per chat, each its chat's oldest
    wake_at: float | None  # when the next reply held back becomes due (None: nothing waits)


def plan(pending: Sequence[Reply], now: float, busy: Collection[str], owner: str) -> Plan:
    """Which replies to start delivering now: paired chats' first, then strangers'.

    ``pending`` oldest first; ``busy``: chats (``channel:chat``) whose delivery is under way,
    or ended after ``pending`` was read (its row may be stale). Order is kept per chat: a
    chat's later replies wait for its oldest, however long that takes; other chats are not
    affected."""
    start: list[Reply] = []
    wake_at: float | None = None
    seen: set[str] = set()
    for reply in pending:
        chat = reply.address.chat_address
        if chat in seen:
            continue
        seen.add(chat)
        if chat in busy:
            continue
        held = reply.owner not in (None, owner) and reply.lease_until > now
        due_at = max(reply.next_attempt_at, reply.lease_until if held else 0.0)
        if due_at > now:
            wake_at = due_at if wake_at is None else min(wake_at, due_at)
            continue
        start.append(reply)
    start.sort(key=lambda reply: reply.stranger)  # stable: oldest first within each group
    return Plan(start, wake_at)


class Pacer:
    """A channel's rate limits: a bucket per chat and one for the whole channel. A send waits
    for both (reservations queue up in order, so nobody starves). A send to a stranger first
    waits its turn in the strangers' own bucket, and only then takes a place in the channel's:
    strangers queue among themselves, never ahead of paired chats."""

    def __init__(self, limits: RateLimitSettings, clock: Callable[[], float]) -> None:
        self.chats: KeyedBuckets[str] = KeyedBuckets(limits.per_chat, limits.per_chat_burst)
        self.overall = TokenBucket(limits.overall, limits.overall_burst)
        self.strangers = TokenBucket(limits.strangers, limits.strangers_burst)
        self.clock = clock

    async def wait(self, chat: str, stranger: bool = False) -> None:
        if stranger:
            delay = self.strangers.reserve(self.clock())
            if delay > 0:
                await asyncio.sleep(delay)
        now = self.clock()
        delay = max(self.chats.reserve(chat, now), self.overall.reserve(now))
        if delay > 0:
            await asyncio.sleep(delay)


class Outbox:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        limits: Mapping[str, RateLimitSettings],
        metrics: Metrics,
        lease: Callable[[], Lease],
        clock: Callable[[], float] = time.time,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.store = store
        self.channels = channels
        self.metrics = metrics
        self.lease = lease
        self.clock = clock
        self.log = get_logger()
        self.tracing = tracing
        self._wakeups = {name: asyncio.Event() for name in channels}
        self._pacers = {name: Pacer(limits[name], clock) for name in channels}
        self._busy: dict[str, set[str]] = {name: set() for name in channels}
        # chats whose delivery ended while the pending replies were being read: their rows in
        # that read may be stale, so they wait for the next read
        self._ended_meanwhile: dict[str, set[str]] = {name: set() for name in channels}
        self._trials: dict[str, dict[str, float]] = {name: {} for name in channels}
        self.circuits = {name: Circuit() for name in channels}

    def notify(self, channel: str) -> None:
        """A reply for ``channel`` was committed, or a delivery ended."""
        if channel in self._wakeups:
            self._wakeups[channel].set()

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """Show (or stop showing) the chat that its agent is at work; best effort."""
        channel = self.channels.get(address.channel)
        if channel is None:
            return
        try:
            await channel.typing(address, message_id, active)
        except Exception as exc:  # a missing indicator must not cost a reply
            self.log.debug("typing_failed", channel=address.channel, error=str(exc))

    async def run(self, channel: str) -> None:
        """Deliver the channel's pending replies, for ever; starts with any left over from
        before a restart. Each chat's delivery is a task of this one's task group."""
        wakeup = self._wakeups[channel]
        busy = self._busy[channel]
        ended_meanwhile = self._ended_meanwhile[channel]
        circuit = self.circuits[channel]
        async with asyncio.TaskGroup() as deliveries:
            while True:
                wakeup.clear()
                hold = circuit.wait(self.clock())
                if hold > 0:  # the platform is down: let it come back before trying again
                    await asyncio.sleep(min(hold, IDLE_RECHECK))
                    continue
                ended_meanwhile.clear()
                pending = await until_written(lambda: self.store.pending_replies(channel), "outbox")
                now = self.clock()
                decided = plan(pending, now, busy | ended_meanwhile, self.lease().owner)
                if circuit.state(now) == "half-open" and decided.start:
                    decided = Plan([self._trial(channel, decided.start, now)], decided.wake_at)
                for reply in decided.start:
                    busy.add(reply.address.chat_address)
                    deliveries.create_task(self._deliver_in_chat(reply))
                wait = IDLE_RECHECK if decided.wake_at is None else decided.wake_at - now
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(wait, IDLE_RECHECK))):
                        await wakeup.wait()

    async def _deliver_in_chat(self, reply: Reply) -> None:
        try:
            with self.tracing.span(
                "reply.deliver",
                parent=("task", reply.task_id),
                attributes={"clawpen.channel": reply.address.channel, "clawpen.reply": reply.id},
            ):
                await self.deliver(reply)
        except Exception:  # a bug in one chat's delivery must not end every chat's
            self.log.exception("reply_delivery_crashed", taskId=reply.task_id)
        finally:
            self._busy[reply.address.channel].discard(reply.address.chat_address)
            self._ended_meanwhile[reply.address.channel].add(reply.address.chat_address)
            self.notify(reply.address.channel)

    def _trial(self, channel: str, candidates: Sequence[Reply], now: float) -> Reply:
        """The one reply to try while the platform may be back: the chat tried least recently,
        so a reply the platform keeps refusing never stands in every other chat's way."""
        tried = self._trials[channel]
        reply = min(candidates, key=lambda r: tried.get(r.address.chat_address, 0.0))
        tried[reply.address.chat_address] = now
        if len(tried) > 10_000:  # forget the oldest half; only the order among recent matters
            for chat in sorted(tried, key=tried.__getitem__)[: len(tried) // 2]:
                del tried[chat]
        return reply

    async def deliver(self, reply: Reply) -> bool:
        """Send what is left of ``reply``; returns True when all of it reached the platform.

        Nothing is sent without a claim in the store on the reply at the chunk about to go:
        a delivery started from a stale row (the chunk went meanwhile, or another delivery
        holds the reply) sends nothing. On a failure that may pass, the attempt is recorded
        with when to try next, and this returns: the chat waits (in order), the others go on."""
        claim = uuid.uuid4().hex
        context = {
            "channel": reply.address.channel,
            "chat": reply.address.chat,
            "taskId": reply.task_id,
        }
        taken = await until_written(
            lambda: self.store.claim_reply(
                reply.id, reply.chunks_sent, self.lease(), claim, self.clock()
            ),
            "claim",
        )
        if not taken:  # sent meanwhile, or another delivery (or orchestrator) has it
            self.log.debug("reply_claim_refused", chunk=reply.chunks_sent, **context)
            return False
        outcome: Outcome = "held"
        try:
            outcome = await self._deliver_claimed(reply, claim, context)
        finally:
            if outcome == "held":
                with contextlib.suppress(Exception):  # else the lease's end frees it
                    await self.store.release_reply(reply.id, claim)
        return outcome == "sent"

    async def _deliver_claimed(
        self, reply: Reply, claim: str, context: dict[str, object]
    ) -> Outcome:
        """Send the chunks from ``reply.chunks_sent`` on, under ``claim``, and say how it
        ended: every chunk recorded (``sent``, which ends the claim), a failure recorded or the
        claim lost (``settled``), or stopped while still holding the claim (``held``)."""
        channel = self.channels[reply.address.channel]
        pacer = self._pacers[reply.address.channel]
        if reply.has_file:
            return await self._deliver_file(reply, claim, context)
        chunks = split_text(reply.text, channel.max_message_length)
        sent = reply.chunks_sent
        circuit = self.circuits[reply.address.channel]
        while sent < len(chunks):
            await pacer.wait(reply.address.chat_address, reply.stranger)
            if circuit.wait(self.clock()) > 0:
                return "held"  # the platform went down meanwhile: the reply waits its turn
            message = OutboundMessage(
                reply.address,
                chunks[sent],
                reply.reply_to if sent == 0 else "",
                key=f"cp{reply.id}.{sent}",
                buttons=reply.buttons if sent + 1 == len(chunks) else (),  # a card's, at its end
            )
            self.log.debug("reply_sending", chunk=sent, **context)
            circuit.begin(self.clock())
            try:
                platform_id = await self._send(channel, message)
            except SendError as exc:
                await self._failed(reply, claim, exc, context)
                return "settled"
            self._platform_up(reply.address.channel)
            recorded = await until_written(
                partial(
                    self._record_sent, reply.id, claim, sent, platform_id, sent + 1 == len(chunks)
                ),
                "delivery",
            )
            if not recorded:  # the claim was lost (our lease ran out and another took it)
                self.log.warning("reply_claim_lost", chunk=sent, **context)
                return "settled"
            sent += 1
        self.metrics.replies.labels(reply.address.channel, "sent").inc()
        self.log.info("reply_sent", chunks=len(chunks), **context)
        return "sent"

    async def _deliver_file(self, reply: Reply, claim: str, context: dict[str, object]) -> Outcome:
        """A file is a reply of one piece: sent whole (caption and all) under the claim, then
        recorded, exactly as a text's chunk is, so a restart neither loses nor doubles it."""
        channel = self.channels[reply.address.channel]
        circuit = self.circuits[reply.address.channel]
        file = await until_written(lambda: self.store.reply_file(reply), "file")
        if file is None:  # cannot happen through the store's own writes; said, not hidden
            failure = SendError("the file's bytes are missing from the store", permanent=True)
            await self._failed(reply, claim, failure, context)
            return "settled"
        await self._pacers[reply.address.channel].wait(reply.address.chat_address, reply.stranger)
        if circuit.wait(self.clock()) > 0:
            return "held"
        self.log.debug("reply_sending", file=file.name, size=len(file.data), **context)
        circuit.begin(self.clock())
        try:
            platform_id = await self._send_file(channel, file)
        except SendError as exc:
            await self._failed(reply, claim, exc, context)
            return "settled"
        self._platform_up(reply.address.channel)
        recorded = await until_written(
            partial(self._record_sent, reply.id, claim, 0, platform_id, True), "delivery"
        )
        if not recorded:
            self.log.warning("reply_claim_lost", chunk=0, **context)
            return "settled"
        self.metrics.replies.labels(reply.address.channel, "sent").inc()
        self.log.info("reply_sent", file=file.name, size=len(file.data), **context)
        return "sent"

    async def _send_file(self, channel: Channel, file: OutboundFile) -> str:
        try:
            return await channel.send_file(file)
        except SendError:
            raise
        except Exception as exc:  # an adapter's error on this file: retried, no outage
            self.log.exception("channel_send_error", channel=channel.name)
            raise SendError(f"{type(exc).__name__}: {exc}", about_message=True) from exc

    async def _record_sent(
        self, reply_id: int, claim: str, chunk: int, platform_id: str, done: bool
    ) -> bool:
        return await self.store.record_chunk_sent(
            reply_id, claim, chunk, platform_id, done, self.clock()
        )

    async def _send(self, channel: Channel, message: OutboundMessage) -> str:
        try:
            return await channel.send(message)
        except SendError:
            raise
        except Exception as exc:  # an adapter's error on this message: retried, no outage
            self.log.exception("channel_send_error", channel=channel.name)
            raise SendError(f"{type(exc).__name__}: {exc}", about_message=True) from exc

    def _platform_up(self, channel: str) -> None:
        circuit = self.circuits[channel]
        if circuit.opened_at is not None:
            self.log.info("channel_circuit_closed", channel=channel)
        circuit.success()

    def _platform_down(self, channel: str, exc: SendError) -> bool:
        """Count a failure that is not about one message; True while the circuit is open
        (then the reply's own attempts are not spent: the outage is waited out)."""
        if exc.permanent or exc.about_message or exc.retry_after is not None:
            return False  # this message's own failure, or the platform asking us to slow down
        circuit = self.circuits[channel]
        now = self.clock()
        if circuit.failure(now, str(exc)):
            self.log.error(
                "channel_circuit_open",
                channel=channel,
                failures=circuit.failures,
                error=str(exc),
                pauseSeconds=round(circuit.open_for, 1),
                hint=f"{channel} keeps failing; replies wait and go out when it is back",
            )
        return circuit.opened_at is not None

    async def _failed(
        self, reply: Reply, claim: str, exc: SendError, context: dict[str, object]
    ) -> None:
        outage = self._platform_down(reply.address.channel, exc)
        attempt = reply.attempts + (0 if outage else 1)
        final = exc.permanent or attempt >= MAX_ATTEMPTS
        delay = PLATFORM.delay(attempt - 1, exc.retry_after)
        await until_written(
            lambda: self.store.record_send_failure(
                reply.id, claim, str(exc), final, self.clock() + delay, counted=not outage
            ),
            "delivery attempt",
        )
        self.metrics.replies.labels(reply.address.channel, "error").inc()
        self.log.warning(
            "reply_failed",
            error=str(exc),
            attempt=attempt,
            final=final,
            retryIn=None if final else round(delay, 3),
            **context,
        )
