"""Discord through discord.py: the gateway in, REST out; approval cards as message components
(an action row of buttons), their taps as ``INTERACTION_CREATE``; files back as attachments.

The gateway has no acknowledgement: Discord pushes each event once per session, and replays
the ones after the client's last sequence number when it RESUMEs a dropped connection (which
discord.py does by itself). So nothing here is acknowledged; instead a message is kept in
memory and handed to ``accept`` again until the store has committed it, and a message seen
twice (a replay) is dropped by the core, which deduplicates by message id.

A tap must be answered within 3 seconds: with the card itself (type 7, UPDATE_MESSAGE, its
buttons gone) or a notice only the tapper sees (type 4, ephemeral). When the core takes longer,
the tap is deferred (type 6) in time and the card edited, or the notice sent as a follow-up,
once the core has decided.

This adapter runs in a process of its own (``process.py``); discord.py is imported there,
never in the orchestrator.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

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
    report_tap,
    skipped_attachment_note,
)
from .interactions import (
    DEFERRED_UPDATE_MESSAGE,
    answer,
    buttons_view,
    card_tap,
    decided,
    notice,
    response,
)

if TYPE_CHECKING:
    import discord

    from .client import Bot

MAX_MESSAGE_LENGTH = 2000
MAX_FILE_BYTES = 10 * 1024 * 1024  # Discord's upload limit for a bot, per message
T = TypeVar("T")
TYPING_SECONDS = 8.0  # Discord shows "typing..." for about 10 s per call
LOGIN_WAIT_SECONDS = 30.0  # a send before the client has logged in waits this long


class DiscordSettings(ChannelSettings):
    token: str = Field(repr=False)
    api_base_url: str = "https://discord.com/api"  # the REST base, without the version


class DiscordAdapter:
    name = "discord"
    max_message_length = MAX_MESSAGE_LENGTH
    # seconds the core may take over a tap before it is deferred: within Discord's 3, with
    # room for the response's own way there
    defer_after = 2.0

    def __init__(self, settings: DiscordSettings) -> None:
        from . import client  # noqa: F401  (discord.py loads here, before run)

        self.settings = settings
        self.log = get_logger()
        self._client: Bot | None = None
        self._logged_in = asyncio.Event()
        self._received: asyncio.Queue[discord.Message] = asyncio.Queue()
        self._typing_at: dict[str, float] = {}
        self._accept: Accept | None = None
        self._tapping: set[asyncio.Task[None]] = set()

    async def run(self, accept: Accept) -> None:
        import discord

        from .client import Bot

        self._logged_in.clear()
        self._accept = accept
        client = self._client = Bot(
            self.settings.api_base_url, self._received.put_nowait, self._interaction
        )
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
            for task in list(self._tapping):
                task.cancel()
            await client.close()

    def _interaction(self, raw: Any) -> None:
        """An ``INTERACTION_CREATE`` from the gateway (discord.py's reader calls this): each
        tap is answered on its own, never behind messages waiting for the store."""
        if self._accept is None or self._client is None:
            return
        task = asyncio.ensure_future(self._tap(self._client, raw, self._accept))
        self._tapping.add(task)
        task.add_done_callback(self._tapping.discard)

    async def _tap(self, client: Bot, raw: Any, accept: Accept) -> None:
        """A button pressed: the core decides, and Discord shows the decision on the card or
        tells the tapper alone. Who tapped is Discord's word (``member.user.id`` or
        ``user.id``); an interaction that is not a button on a message is logged and dropped."""
        try:
            found = card_tap(raw, client)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.log.warning("channel_bad_tap", channel=self.name, error=str(exc))
            return
        if found is None:
            return
        tap, interaction_id, token = found
        deciding = asyncio.ensure_future(report_tap(accept, tap))
        deferred = False
        try:
            await asyncio.wait({deciding}, timeout=self.defer_after)
            if not deciding.done():  # Discord's 3 seconds would pass: answer "later" now
                deferred = True
                try:
                    deferral = response(DEFERRED_UPDATE_MESSAGE)
                    await _sent(client.respond(interaction_id, token, deferral))
                except SendError as exc:  # the decision is still shown once it is made
                    self.log.warning("channel_tap_answer_failed", channel=self.name, error=str(exc))
            outcome = await decided(deciding)
            if outcome is None:
                return
            if not deferred:
                await _sent(client.respond(interaction_id, token, answer(outcome)))
            elif outcome.card:
                await self._edit(client, tap.address, tap.platform_id, outcome.card)
            elif outcome.notice:
                await _sent(client.follow_up(token, notice(outcome.notice)))
        except SendError as exc:  # the decision stands; only its display failed
            self.log.warning("channel_tap_answer_failed", channel=self.name, error=str(exc))
        finally:
            deciding.cancel()

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
        """A message; a card gets its buttons as components (``custom_id`` = the button's
        data)."""
        import discord

        client = await self._ready_client()
        options: dict[str, Any] = {}
        if message.buttons:
            options["view"] = buttons_view(message.buttons)
        address = message.address
        channel = client.get_partial_messageable(int(address.thread or address.chat))
        reference = _reference(client, address, message.reply_to)
        sent = await _sent(
            channel.send(
                message.text,
                reference=reference,  # type: ignore[arg-type]
                nonce=message.key or secrets.token_hex(8),  # Discord drops a repeated nonce
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False),
                **options,
            )
        )
        return str(sent.id)

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """The card's message edited: its new text, its components gone."""
        await self._edit(await self._ready_client(), address, platform_id, text)

    async def _edit(self, client: Bot, address: Address, platform_id: str, text: str) -> None:
        import discord

        channel = client.get_partial_messageable(int(address.thread or address.chat))
        await _sent(
            channel.get_partial_message(int(platform_id)).edit(
                content=text[:MAX_MESSAGE_LENGTH],
                view=None,
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False),
            )
        )

    async def send_file(self, file: OutboundFile) -> str:
        """A message with the file attached (``discord.File``), its caption as the text."""
        import discord

        if len(file.data) > MAX_FILE_BYTES:
            raise SendError(
                f"discord: {file.name} is over the {MAX_FILE_BYTES // (1024 * 1024)} MB limit",
                permanent=True,
                about_message=True,
            )
        client = await self._ready_client()
        address = file.address
        sent = await _sent(
            client.get_partial_messageable(int(address.thread or address.chat)).send(
                file.caption[:MAX_MESSAGE_LENGTH] or None,
                file=discord.File(io.BytesIO(file.data), filename=file.name),
                reference=_reference(client, address, file.reply_to),  # type: ignore[arg-type]
                nonce=secrets.token_hex(8),
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False),
            )
        )
        return str(sent.id)

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


def _reference(client: Bot, address: Address, reply_to: str) -> discord.MessageReference | None:
    """The question a reply quotes, in guilds only (in a DM the reply follows it anyway)."""
    import discord

    if not reply_to or not _in_guild(client, int(address.chat)):
        return None
    return discord.MessageReference(
        message_id=int(reply_to),
        channel_id=int(address.thread or address.chat),
        fail_if_not_exists=False,
    )


async def _sent(call: Awaitable[T]) -> T:
    """A REST call's result; Discord's refusals and an unreachable Discord as ``SendError``:
    a 429 with its wait, a 5xx to try again, a forbidden or unknown target for good."""
    import aiohttp
    import discord

    try:
        return await call
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


def _in_guild(client: Bot, channel_id: int) -> bool:
    channel = client.get_channel(channel_id)
    return channel is not None and getattr(channel, "guild", None) is not None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
