"""Delivering committed replies: retried with backoff, marked sent exactly once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

from .channels.base import Channel, SendError
from .logging import get_logger
from .metrics import Metrics
from .models import Reply
from .store import Store

MAX_ATTEMPTS = 8


def backoff(attempt: int, retry_after: float | None = None, rand: float | None = None) -> float:
    """Seconds before try ``attempt + 1``: the platform's wait if it gave one, else exponential
    with full jitter, capped at a minute."""
    if retry_after is not None:
        return retry_after
    cap = min(60.0, 0.5 * 2.0**attempt)
    return cap * (random.random() if rand is None else rand)


class Outbox:
    def __init__(self, store: Store, channels: Mapping[str, Channel], metrics: Metrics) -> None:
        self.store = store
        self.channels = channels
        self.metrics = metrics
        self.log = get_logger()

    async def deliver(self, reply: Reply) -> bool:
        channel = self.channels.get(reply.channel)
        if channel is None:
            self.store.mark_reply_failed(
                reply.id, f"channel {reply.channel} is not configured", final=True
            )
            return False
        for attempt in range(reply.attempts, MAX_ATTEMPTS):
            try:
                ids = await channel.send(reply.chat_id, reply.text)
            except SendError as exc:
                final = exc.permanent or attempt + 1 >= MAX_ATTEMPTS
                self.store.mark_reply_failed(reply.id, str(exc), final=final)
                self.metrics.replies.labels(reply.channel, "error").inc()
                delay = backoff(attempt, exc.retry_after)
                self.log.warning(
                    "reply_failed",
                    channel=reply.channel,
                    chat=reply.chat_id,
                    taskId=reply.task_id,
                    error=str(exc),
                    attempt=attempt + 1,
                    final=final,
                    retryIn=None if final else round(delay, 3),
                )
                if final:
                    return False
                await asyncio.sleep(delay)
                continue
            self.store.mark_reply_sent(reply.id, ids)
            self.metrics.replies.labels(reply.channel, "sent").inc()
            self.log.info(
                "reply_sent", channel=reply.channel, chat=reply.chat_id, taskId=reply.task_id
            )
            return True
        return False

    async def deliver_pending(self) -> None:
        """Replies committed before a restart but never confirmed sent."""
        for reply in self.store.pending_replies():
            await self.deliver(reply)
