"""Telegram through python-telegram-bot: Bot API long polling in, sendMessage out.

The update offset is the acknowledgement: it is sent to Telegram only after every update
before it was committed to the store. Telegram keeps unconfirmed updates and hands them out
again, so after a crash they are re-read (and deduplicated), never lost, and the offset needs no
storage of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import telegram
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from ..config import TelegramSettings
from ..errors import ClawpenError, StoreError
from ..logging import get_logger
from ..models import InboundMessage
from .base import Accept, SendError


class TelegramChannel:
    name = "telegram"
    max_message_length = 4096

    def __init__(self, settings: TelegramSettings) -> None:
        self.settings = settings
        self.log = get_logger()
        self._store_delay = 0.5
        base = settings.api_base_url.rstrip("/")
        self.bot = telegram.Bot(
            settings.token,
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=HTTPXRequest(connection_pool_size=8),
            get_updates_request=HTTPXRequest(read_timeout=settings.poll_timeout + 10),
        )

    async def run(self, accept: Accept) -> None:
        try:
            await self.bot.initialize()
        except InvalidToken:
            raise ClawpenError(
                "telegram: the bot token was refused", "check channels.telegram.token"
            ) from None
        offset = 0  # from 0, Telegram starts at the earliest update not yet confirmed
        delay = 1.0
        try:
            while True:
                try:
                    updates = await self.bot.get_updates(
                        offset=offset,
                        timeout=self.settings.poll_timeout,
                        allowed_updates=["message"],
                    )
                except RetryAfter as exc:
                    await asyncio.sleep(_seconds(exc.retry_after))
                    continue
                except (NetworkError, TelegramError) as exc:
                    self.log.warning(
                        "channel_error", channel=self.name, error=str(exc), retryIn=delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60.0)
                    continue
                delay = 1.0
                offset = await self._accept_all(updates, offset, accept)
        finally:
            await self.bot.shutdown()

    async def _accept_all(
        self, updates: Sequence[telegram.Update], offset: int, accept: Accept
    ) -> int:
        """Commit updates in order; returns the offset that acknowledges the committed ones.
        While the store cannot be written, nothing more is acknowledged: Telegram keeps the
        rest and hands them out again."""
        for update in updates:
            message = update.message
            # text, or a photo/file/voice with its caption (or none: the router answers that);
            # service messages (joins, pins) carry neither and are not for the agent
            if message is not None and (message.text or message.effective_attachment):
                inbound = InboundMessage(
                    channel=self.name,
                    chat_id=str(message.chat.id),
                    sender_id=str(message.from_user.id if message.from_user else ""),
                    text=message.text or message.caption or "",
                    platform_id=str(message.message_id),
                    received_at=message.date.timestamp(),
                )
                try:
                    await accept(inbound)
                except StoreError as exc:
                    self.log.error(
                        "store_unwritable",
                        channel=self.name,
                        error=str(exc),
                        retryIn=self._store_delay,
                    )
                    await asyncio.sleep(self._store_delay)
                    self._store_delay = min(self._store_delay * 2, 30.0)
                    return offset
            offset = update.update_id + 1
        self._store_delay = 0.5
        return offset

    async def send(self, chat_id: str, text: str) -> str:
        try:
            sent = await self.bot.send_message(chat_id=int(chat_id), text=text)
        except RetryAfter as exc:
            raise SendError(str(exc), retry_after=_seconds(exc.retry_after)) from None
        except (Forbidden, BadRequest) as exc:
            raise SendError(str(exc), permanent=True) from None
        except TelegramError as exc:
            raise SendError(str(exc)) from None
        return str(sent.message_id)


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
