"""Delivering committed replies: one worker per channel, in order, retried, recorded per chunk.

A reply is committed before its first send. Each chunk that the platform confirms is recorded
at once, so a restart resumes with the next chunk instead of repeating the ones the user has.
The one window left is between the platform's confirmation and that commit (microseconds);
a crash exactly there sends the chunk again: at-least-once, never lost.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from functools import partial

from .channels.base import Channel, SendError
from .logging import get_logger
from .metrics import Metrics
from .models import Reply
from .store import Store, until_written

MAX_ATTEMPTS = 8


def backoff(attempt: int, retry_after: float | None = None, rand: float | None = None) -> float:
    """Seconds before try ``attempt + 1``: the platform's wait if it gave one, else exponential
    with full jitter, capped at a minute."""
    if retry_after is not None:
        return retry_after
    cap = min(60.0, 0.5 * 2.0**attempt)
    return cap * (random.random() if rand is None else rand)


def split_text(text: str, limit: int) -> list[str]:
    """Cut a reply into messages the platform accepts, at line ends where possible."""
    chunks: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    chunks.append(text)
    return chunks


class Outbox:
    def __init__(self, store: Store, channels: Mapping[str, Channel], metrics: Metrics) -> None:
        self.store = store
        self.channels = channels
        self.metrics = metrics
        self.log = get_logger()
        self._wakeups = {name: asyncio.Event() for name in channels}

    def notify(self, channel: str) -> None:
        """A reply for ``channel`` was committed."""
        if channel in self._wakeups:
            self._wakeups[channel].set()

    async def run(self, channel: str) -> None:
        """Deliver the channel's pending replies in order, forever; starts with any left over
        from before a restart."""
        wakeup = self._wakeups[channel]
        while True:
            wakeup.clear()
            for reply in await until_written(lambda: self.store.pending_replies(channel), "outbox"):
                await self.deliver(reply)
            await wakeup.wait()

    async def _send(self, channel: Channel, chat_id: str, text: str) -> str:
        try:
            return await channel.send(chat_id, text)
        except SendError:
            raise
        except Exception as exc:  # an adapter's unexpected error: retried like any other
            self.log.exception("channel_send_error", channel=channel.name, chat=chat_id)
            raise SendError(f"{type(exc).__name__}: {exc}") from exc

    async def deliver(self, reply: Reply) -> bool:
        channel = self.channels[reply.channel]
        chunks = split_text(reply.text, channel.max_message_length)
        attempt = reply.attempts
        sent = reply.chunks_sent
        while sent < len(chunks):
            try:
                platform_id = await self._send(channel, reply.chat_id, chunks[sent])
            except SendError as exc:
                attempt += 1
                final = exc.permanent or attempt >= MAX_ATTEMPTS
                await until_written(
                    partial(self.store.mark_reply_failed, reply.id, str(exc), final),
                    "delivery attempt",
                )
                self.metrics.replies.labels(reply.channel, "error").inc()
                delay = backoff(attempt - 1, exc.retry_after)
                self.log.warning(
                    "reply_failed",
                    channel=reply.channel,
                    chat=reply.chat_id,
                    taskId=reply.task_id,
                    error=str(exc),
                    attempt=attempt,
                    final=final,
                    retryIn=None if final else round(delay, 3),
                )
                if final:
                    return False
                await asyncio.sleep(delay)
                continue
            sent += 1
            done = sent == len(chunks)
            await until_written(
                partial(self.store.record_chunk_sent, reply.id, platform_id, done), "delivery"
            )
        self.metrics.replies.labels(reply.channel, "sent").inc()
        self.log.info(
            "reply_sent",
            channel=reply.channel,
            chat=reply.chat_id,
            taskId=reply.task_id,
            chunks=len(chunks),
        )
        return True
