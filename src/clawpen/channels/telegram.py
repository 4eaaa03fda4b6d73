"""Telegram through python-telegram-bot: Bot API long polling in, sendMessage out.

The update offset is the acknowledgement: it is saved, and sent to Telegram, only after every
update before it was committed to the store, so a crash re-reads rather than loses.
"""

from __future__ import annotations

import asyncio

import telegram
from telegram.error import Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from ..config import TelegramSettings
from ..errors import ClawpenError
from ..logging import get_logger
from ..models import InboundMessage
from ..store import Store
from .base import Accept, SendError

MAX_MESSAGE = 4096
OFFSET_KEY = "telegram.offset"


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Telegram refuses messages over 4096 characters: cut at line ends where possible."""
    chunks: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    chunks.append(text)
    return chunks


class TelegramChannel:
    name = "telegram"

    def __init__(self, settings: TelegramSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.log = get_logger()
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
        offset = int(self.store.get_value(OFFSET_KEY) or 0)
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
                for update in updates:
                    message = update.message
                    if message is not None and message.text is not None:
                        await accept(
                            InboundMessage(
                                channel=self.name,
                                chat_id=str(message.chat.id),
                                sender_id=str(message.from_user.id if message.from_user else ""),
                                text=message.text,
                                platform_id=str(message.message_id),
                                received_at=message.date.timestamp(),
                            )
                        )
                    offset = update.update_id + 1
                if updates:
                    self.store.set_value(OFFSET_KEY, str(offset))
        finally:
            await self.bot.shutdown()

    async def send(self, chat_id: str, text: str) -> list[str]:
        ids = []
        for chunk in split_text(text):
            try:
                sent = await self.bot.send_message(chat_id=int(chat_id), text=chunk)
            except RetryAfter as exc:
                raise SendError(str(exc), retry_after=_seconds(exc.retry_after)) from None
            except Forbidden as exc:
                raise SendError(str(exc), permanent=True) from None
            except TelegramError as exc:
                raise SendError(str(exc)) from None
            ids.append(str(sent.message_id))
        return ids


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
