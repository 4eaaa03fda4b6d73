"""Discord through discord.py: the gateway in, REST out.

The gateway has no acknowledgement: Discord pushes each event once per session, and replays
the ones after the client's last sequence number when it RESUMEs a dropped connection (which
discord.py does by itself). So nothing here is acknowledged; instead a message is kept in
memory and handed to ``accept`` again until the store has committed it, and a message seen
twice (a replay) is dropped by the core, which deduplicates by message id.

This adapter runs in a process of its own (``process.py``); discord.py is imported there,
never in the orchestrator.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

from ...models import Address, Attachment, InboundMessage, OutboundFile, OutboundMessage
from ...obs.logging import get_logger
from ...retry import STORE, Retrier
from ...store.base import StoreUnavailable
from ..base import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    Accept,
    ChannelFatal,
    ChannelSettings,
    SendError,
    connected,
    files_not_supported,
    skipped_attachment_note,
    with_reply_codes,
)

if TYPE_CHECKING:
    import discord

    from .client import Bot

MAX_MESSAGE_LENGTH = 2000
TYPING_SECONDS = 8.0  # Discord shows "typing..." for about 10 s per call
LOGIN_WAIT_SECONDS = 30.0  # a send before the client has logged in waits this long


class DiscordSettings(ChannelSettings):
    token: str = Field(repr=False)
    api_base_url: str = "https://discord.com/api"  # the REST base, without the version


class DiscordAdapter:
    name = "discord"
    max_message_length = MAX_MESSAGE_LENGTH

    def __init__(self, settings: DiscordSettings) -> None:
        from . import client  # noqa: F401  (discord.py loads here, before run)

        self.settings = settings
        self.log = get_logger()
        self._client: Bot | None = None
        self._logged_in = asyncio.Event()
        self._received: asyncio.Queue[discord.Message] = asyncio.Queue()
        self._typing_at: dict[str, float] = {}

    async def run(self, accept: Accept) -> None:
        import discord

        from .client import Bot

        self._logged_in.clear()
        client = self._client = Bot(self.settings.api_base_url, self._received.put_nowait)
        try:
            try:
                await client.login(self.settings.token)
            except discord.LoginFailure:
                raise ChannelFatal(
                    "discord: the bot token was refused; check channels.discord.token"
                ) from None
            await client.point_gateway()
            self._logged_in.set()
            await connected(accept)
            await self._serve(client, accept)
        finally:
            self._logged_in.clear()
            await client.close()

    async def _serve(self, client: Bot, accept: Accept) -> None:
        """The gateway (discord.py reconnects and resumes on its own) and the hand-over of
        what it receives, until one of them fails."""
        import discord

        gateway = asyncio.ensure_future(client.connect(reconnect=True))
        deliver = asyncio.ensure_future(self._deliver(client, accept))
        try:
            done, _ = await asyncio.wait({gateway, deliver}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                try:
                    task.result()
                except discord.PrivilegedIntentsRequired:
                    raise ChannelFatal(
                        "discord: the Message Content intent is not enabled for this bot;"
                        " enable it in the Discord developer portal (Bot > Privileged Gateway"
                        " Intents)"
                    ) from None
            raise ConnectionError("discord: the gateway connection ended")
        finally:
            for task in (gateway, deliver):
                task.cancel()
            await asyncio.gather(gateway, deliver, return_exceptions=True)

    async def _deliver(self, client: Bot, accept: Accept) -> None:
        """Hand over what arrived, in order and together (they commit together); what the
        store could not take is tried again first: Discord will not send it again."""
        store = Retrier(STORE)
        while True:
            batch = [await self._received.get()]
            while not self._received.empty():
                batch.append(self._received.get_nowait())
            translated = await asyncio.gather(*(self._inbound(client, m) for m in batch))
            pending = [message for message in translated if message is not None]
            while pending:
                outcomes = await asyncio.gather(
                    *(accept(message) for message in pending), return_exceptions=True
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException) and not isinstance(
                        outcome, StoreUnavailable
                    ):
                        raise outcome
                failed = [
                    message
                    for message, outcome in zip(pending, outcomes, strict=True)
                    if isinstance(outcome, StoreUnavailable)
                ]
                if not failed:
                    store.reset()
                    break
                delay = store.next_delay()
                self.log.error(
                    "store_unwritable",
                    channel=self.name,
                    error=str(outcomes[0]),
                    waiting=len(failed),
                    retryIn=delay,
                )
                await asyncio.sleep(delay)
                pending = failed

    async def _inbound(self, client: Bot, message: discord.Message) -> InboundMessage | None:
        """A user's message as the core takes it; None for what is not for the agent: our
        own posts, other bots, system messages, and messages with neither text nor files."""
        import discord

        me = client.user
        if me is None or message.author.bot or message.author.id == me.id:
            return None
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return None
        if not (message.content or message.attachments):
            return None
        channel = message.channel
        if isinstance(channel, discord.Thread):
            address = Address(self.name, str(channel.parent_id), str(channel.id))
        else:
            address = Address(self.name, str(channel.id))
        mentioned = me.id in message.raw_mentions
        text = strip_mention(message.content, me.id) if mentioned else message.content
        attachments, notes = await self._download(message.attachments)
        reference = message.reference
        return InboundMessage(
            address=address,
            sender_id=str(message.author.id),
            text="\n".join([text, *notes]) if notes else text,
            platform_id=str(message.id),
            received_at=message.created_at.timestamp(),
            reply_to=str(reference.message_id) if reference and reference.message_id else "",
            attachments=attachments,
            addressed=message.guild is None or mentioned,
        )

    async def _download(
        self, files: Sequence[discord.Attachment]
    ) -> tuple[tuple[Attachment, ...], list[str]]:
        """Each file up to the size cap; a note in the text for each one left behind."""
        import aiohttp
        import discord

        attachments: list[Attachment] = []
        notes: list[str] = []
        for file in files[:MAX_ATTACHMENTS]:
            if file.size > MAX_ATTACHMENT_BYTES:
                notes.append(skipped_attachment_note(file.filename, file.size))
                continue
            try:
                data = await file.read()
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                self.log.warning("attachment_download_failed", channel=self.name, error=str(exc))
                notes.append(f"[{file.filename}: could not be downloaded]")
                continue
            media_type = file.content_type or "application/octet-stream"
            attachments.append(Attachment(file.filename, media_type.split(";")[0], data))
        if len(files) > MAX_ATTACHMENTS:
            notes.append(f"[{len(files) - MAX_ATTACHMENTS} more files not downloaded]")
        return tuple(attachments), notes

    async def send(self, message: OutboundMessage) -> str:
        message = with_reply_codes(message)  # native buttons: later, per CONTRACT.md
        import aiohttp
        import discord

        client = await self._ready_client()
        address = message.address
        target = int(address.thread or address.chat)
        reference = None
        if message.reply_to and _in_guild(client, int(address.chat)):  # quote in guilds only
            reference = discord.MessageReference(
                message_id=int(message.reply_to), channel_id=target, fail_if_not_exists=False
            )
        channel = client.get_partial_messageable(target)
        try:
            sent = await channel.send(
                message.text,
                reference=reference,  # type: ignore[arg-type]
                nonce=message.key or secrets.token_hex(8),  # Discord drops a repeated nonce
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False),
            )
        except discord.RateLimited as exc:
            raise SendError(str(exc), retry_after=exc.retry_after) from None
        except (discord.Forbidden, discord.NotFound) as exc:
            raise SendError(str(exc), permanent=True) from None
        except discord.DiscordServerError as exc:
            raise SendError(str(exc)) from None
        except discord.HTTPException as exc:
            if exc.status == 429:  # refused before reaching Discord (Cloudflare)
                retry_after = exc.response.headers.get("Retry-After")
                raise SendError(str(exc), retry_after=_seconds(retry_after)) from None
            raise SendError(str(exc), permanent=400 <= exc.status < 500) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SendError(f"{type(exc).__name__}: {exc}") from None
        return str(sent.id)

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """A card's decision, as a new message until this adapter edits natively."""
        await self.send(OutboundMessage(address, text))

    async def send_file(self, file: OutboundFile) -> str:
        """Native delivery comes later (see the files contract); until then it fails for good,
        and the agent's reply says so."""
        raise files_not_supported("Discord")

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """One call shows "typing..." for about 10 seconds; posting the reply ends it."""
        if not active:
            return
        import aiohttp
        import discord

        channel = address.thread or address.chat
        now = time.monotonic()
        if now - self._typing_at.get(channel, -TYPING_SECONDS) < TYPING_SECONDS:
            return
        self._typing_at[channel] = now
        try:
            client = await self._ready_client()
            await client.http.send_typing(int(channel))
        except (SendError, discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            self.log.debug("channel_typing_failed", channel=self.name, error=str(exc))

    async def _ready_client(self) -> Bot:
        try:
            async with asyncio.timeout(LOGIN_WAIT_SECONDS):
                await self._logged_in.wait()
        except TimeoutError:
            raise SendError("discord: not logged in yet") from None
        assert self._client is not None
        return self._client


def strip_mention(text: str, user_id: int) -> str:
    """``"<@123> hello"`` -> ``"hello"``: the bot's own mention (``<@id>`` or ``<@!id>``)."""
    return re.sub(rf"\s*<@!?{user_id}>\s*", " ", text).strip()


def _in_guild(client: Bot, channel_id: int) -> bool:
    channel = client.get_channel(channel_id)
    return channel is not None and getattr(channel, "guild", None) is not None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
