"""Telegram through python-telegram-bot: Bot API long polling in, sendMessage out; approval
cards as inline keyboards, their taps as callback queries (answered, then the card edited).

The update offset is the acknowledgement: it is sent to Telegram only after every update
before it was committed to the store. Telegram keeps unconfirmed updates and hands them out
again, so after a crash they are re-read (and deduplicated), never lost, and the offset needs no
storage of its own. The updates of one poll are handed over together, so the store commits them
in one transaction.

This adapter runs in a process of its own (``process.py``); python-telegram-bot is imported
there, never in the orchestrator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ...models import Address, Attachment, InboundMessage, OutboundFile, OutboundMessage
from ...obs.logging import get_logger
from ...retry import PLATFORM, STORE, Retrier
from ...store.base import StoreUnavailable
from ..base import (
    MAX_ATTACHMENT_BYTES,
    Accept,
    CardTap,
    ChannelFatal,
    ChannelSettings,
    SendError,
    connected,
    report_tap,
    skipped_attachment_note,
)
from ..reach import cause_of

if TYPE_CHECKING:
    import telegram

MAX_MESSAGE_LENGTH = 4096
MAX_FILE_BYTES = 50 * 1024 * 1024  # the Bot API's upload limit
MAX_PHOTO_BYTES = 10 * 1024 * 1024  # sendPhoto's; a larger picture goes as a document
MAX_CAPTION = 1024
PHOTO_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})


class TelegramSettings(ChannelSettings):
    token: str = Field(repr=False)
    api_base_url: str = "https://api.telegram.org"
    poll_timeout: int = Field(30, ge=0, le=50)


class TelegramAdapter:
    name = "telegram"
    max_message_length = MAX_MESSAGE_LENGTH

    def __init__(self, settings: TelegramSettings) -> None:
        import telegram

        from .request import AiohttpRequest

        self.settings = settings
        self.log = get_logger()
        base = settings.api_base_url.rstrip("/")
        self.bot = telegram.Bot(
            settings.token,
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=AiohttpRequest(connection_pool_size=16),
            get_updates_request=AiohttpRequest(1, read_timeout=settings.poll_timeout + 10),
        )

    async def run(self, accept: Accept) -> None:
        from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError

        try:
            await self.bot.initialize()
        except InvalidToken:
            raise ChannelFatal(
                "telegram: the bot token was refused; check channels.telegram.token"
            ) from None
        await connected(accept)
        offset = 0  # from 0, Telegram starts at the earliest update not yet confirmed
        polls = Retrier(PLATFORM)
        store = Retrier(STORE)
        try:
            while True:
                try:
                    updates = await self.bot.get_updates(
                        offset=offset,
                        timeout=self.settings.poll_timeout,
                        allowed_updates=["message", "callback_query"],
                    )
                except RetryAfter as exc:
                    await polls.wait(_seconds(exc.retry_after))
                    continue
                except (NetworkError, TelegramError) as exc:
                    if cause_of(exc) is not None:
                        raise  # the platform is gone: reach.py says so and tries again
                    delay = polls.next_delay()
                    self.log.warning(
                        "channel_error", channel=self.name, error=str(exc), retryIn=delay
                    )
                    await asyncio.sleep(delay)
                    continue
                polls.reset()
                offset, unwritable = await self._accept_all(updates, offset, accept)
                if unwritable is None:
                    store.reset()
                    continue
                delay = store.next_delay()
                self.log.error(
                    "store_unwritable", channel=self.name, error=unwritable, retryIn=delay
                )
                await asyncio.sleep(delay)
        finally:
            await self.bot.shutdown()

    async def _accept_all(
        self, updates: Sequence[telegram.Update], offset: int, accept: Accept
    ) -> tuple[int, str | None]:
        """Hand every update over at once (they commit together); returns the offset that
        acknowledges those committed without a gap, and the store's error if one was not."""
        for update in updates:  # a button's tap is answered before the messages are handed over
            if update.callback_query is not None:
                try:
                    await self._tap(update.callback_query, accept)
                except StoreUnavailable as exc:
                    return offset, str(exc)
        inbound = [(update.update_id, _inbound(update)) for update in updates]
        inbound = await asyncio.gather(
            *(
                self._with_files(update, message)
                for update, (_, message) in zip(updates, inbound, strict=True)
            )
        )
        outcomes = await asyncio.gather(
            *(accept(message) for _, message in inbound if message is not None),
            return_exceptions=True,
        )
        results = iter(outcomes)
        for update_id, message in inbound:
            if message is not None:
                outcome = next(results)
                if isinstance(outcome, StoreUnavailable):
                    return offset, str(outcome)
                if isinstance(outcome, BaseException):
                    raise outcome
            offset = update_id + 1
        return offset, None

    async def _with_files(
        self, update: telegram.Update, message: InboundMessage | None
    ) -> tuple[int, InboundMessage | None]:
        """The message with the file it brought (a photo in its largest size, a document, a
        voice note), downloaded; one too large or that cannot be fetched is named instead."""
        wanted = _attachment(update)
        if message is None or wanted is None:
            return update.update_id, message
        file, name, media_type = wanted
        size = file.file_size or 0
        if size > MAX_ATTACHMENT_BYTES:
            note = skipped_attachment_note(name, size)
            return update.update_id, replace(message, text=f"{message.text}\n{note}".strip())
        try:
            data = await self._download(file.file_id)
        except Exception as exc:  # the message still counts; the file is named, not lost silently
            self.log.warning("attachment_unavailable", channel=self.name, error=str(exc))
            note = f"[{name}: could not be downloaded from Telegram]"
            return update.update_id, replace(message, text=f"{message.text}\n{note}".strip())
        attachment = Attachment(name, media_type, bytes(data))
        return update.update_id, replace(message, attachments=(attachment,))

    async def _download(self, file_id: str) -> bytearray:
        retries = Retrier(PLATFORM)
        for attempt in range(3):
            try:
                found = await self.bot.get_file(file_id)
                data: bytearray = await found.download_as_bytearray()
                if len(data) > MAX_ATTACHMENT_BYTES:
                    raise ValueError(f"over {MAX_ATTACHMENT_BYTES} bytes")
                return data
            except Exception:
                if attempt == 2:
                    raise
                await asyncio.sleep(retries.next_delay())
        raise AssertionError("unreachable")

    async def _tap(self, query: telegram.CallbackQuery, accept: Accept) -> None:
        """A button pressed: the core decides; Telegram is answered (its spinner stops, the
        tapper sees the notice), then the card shows the decision, without its buttons. Who
        tapped is Telegram's word (``from``), never anything in the message we wrote."""
        from telegram.error import TelegramError

        message = query.message
        if message is None or not query.data:
            return  # a tap on a message too old for Telegram to say which, or no data
        topic = getattr(message, "message_thread_id", None)
        is_topic = getattr(message, "is_topic_message", False)
        tap = CardTap(
            address=Address(
                "telegram", str(message.chat.id), str(topic) if is_topic and topic else ""
            ),
            sender_id=str(query.from_user.id),
            data=query.data,
            platform_id=str(message.message_id),
        )
        outcome = await report_tap(accept, tap)
        try:
            await query.answer(outcome.notice or None)
            if outcome.card:
                await self.bot.edit_message_text(
                    outcome.card[:MAX_MESSAGE_LENGTH],
                    chat_id=message.chat.id,
                    message_id=message.message_id,
                    reply_markup=None,
                )
        except TelegramError as exc:  # the decision is recorded; only its display failed
            self.log.warning("channel_tap_answer_failed", channel=self.name, error=str(exc))

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

        try:
            await self.bot.edit_message_text(
                text[:MAX_MESSAGE_LENGTH],
                chat_id=int(address.chat),
                message_id=int(platform_id),
                reply_markup=None,
            )
        except RetryAfter as exc:
            raise SendError(str(exc), retry_after=_seconds(exc.retry_after)) from None
        except BadRequest as exc:
            if "not modified" in str(exc).lower():
                return  # it already says so
            raise SendError(str(exc), permanent=True) from None
        except Forbidden as exc:
            raise SendError(str(exc), permanent=True) from None
        except TelegramError as exc:
            raise SendError(str(exc)) from None

    async def send(self, message: OutboundMessage) -> str:
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup

        options = _placement(message.address, message.reply_to)
        if message.buttons:  # one button a row: labels stay whole on a phone
            options["reply_markup"] = InlineKeyboardMarkup(
                [[InlineKeyboardButton(b.label, callback_data=b.data)] for b in message.buttons]
            )
        return await _sent(
            self.bot.send_message(chat_id=int(message.address.chat), text=message.text, **options)
        )

    async def send_file(self, file: OutboundFile) -> str:
        """A picture as a photo (``sendPhoto``), anything else as a document (``sendDocument``),
        so it shows as Telegram's users expect."""
        from telegram import InputFile

        options = _placement(file.address, file.reply_to)
        if file.caption:
            options["caption"] = file.caption[:MAX_CAPTION]
        upload = InputFile(file.data, filename=file.name)
        chat = int(file.address.chat)
        if file.media_type in PHOTO_TYPES and len(file.data) <= MAX_PHOTO_BYTES:
            return await _sent(self.bot.send_photo(chat_id=chat, photo=upload, **options))
        return await _sent(self.bot.send_document(chat_id=chat, document=upload, **options))

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """Telegram shows "typing..." for 5 seconds per call; it ends by itself."""
        if not active:
            return
        from telegram.constants import ChatAction
        from telegram.error import TelegramError

        options: dict[str, Any] = {}
        if address.thread:
            options["message_thread_id"] = int(address.thread)
        try:
            await self.bot.send_chat_action(int(address.chat), ChatAction.TYPING, **options)
        except TelegramError as exc:
            self.log.debug("channel_typing_failed", channel=self.name, error=str(exc))


def _placement(address: Address, reply_to: str) -> dict[str, Any]:
    """Where in the chat a send goes: its forum topic, and the message it quotes (in groups)."""
    from telegram import ReplyParameters

    options: dict[str, Any] = {}
    if address.thread:
        options["message_thread_id"] = int(address.thread)
    if reply_to and address.chat.startswith("-"):  # quote only in group chats
        options["reply_parameters"] = ReplyParameters(
            int(reply_to), allow_sending_without_reply=True
        )
    return options


async def _sent(call: Awaitable[telegram.Message]) -> str:
    """The sent message's id; Telegram's refusals as ``SendError`` (a 429 with its wait, a
    blocked bot or a bad request for good)."""
    from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

    try:
        sent = await call
    except RetryAfter as exc:
        raise SendError(str(exc), retry_after=_seconds(exc.retry_after)) from None
    except (Forbidden, BadRequest) as exc:
        raise SendError(str(exc), permanent=True) from None
    except TelegramError as exc:
        raise SendError(str(exc)) from None
    return str(sent.message_id)


def _inbound(update: telegram.Update) -> InboundMessage | None:
    """Text, or a photo/file/voice with its caption (or none: the router answers that);
    service messages (joins, pins) carry neither and are not for the agent."""
    message = update.message
    if message is None or not (message.text or message.effective_attachment):
        return None
    topic = message.message_thread_id if message.is_topic_message else None
    reply = message.reply_to_message
    return InboundMessage(
        address=Address("telegram", str(message.chat.id), str(topic) if topic else ""),
        sender_id=str(message.from_user.id if message.from_user else ""),
        text=message.text or message.caption or "",
        platform_id=str(message.message_id),
        received_at=message.date.timestamp(),
        reply_to=str(reply.message_id) if reply is not None else "",
    )


def _attachment(update: telegram.Update) -> tuple[Any, str, str] | None:
    """(the file, its name, its media type) of what the message brought, if anything."""
    message = update.message
    if message is None:
        return None
    if message.photo:
        largest = message.photo[-1]  # Telegram lists a photo's sizes smallest first
        return largest, f"photo-{largest.file_unique_id}.jpg", "image/jpeg"
    for kind, default_name, default_type in (
        ("document", "file", "application/octet-stream"),
        ("voice", "voice.ogg", "audio/ogg"),
        ("audio", "audio", "audio/mpeg"),
        ("video", "video.mp4", "video/mp4"),
    ):
        file = getattr(message, kind, None)
        if file is not None:
            name = getattr(file, "file_name", None) or default_name
            return file, name, getattr(file, "mime_type", None) or default_type
    return None


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
