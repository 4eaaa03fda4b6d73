"""What a chat platform plugs in: its settings, its adapter, and the rules for its addresses.

An adapter only translates: platform events in (``accept``), ``OutboundMessage`` out
(``send``). The same ``Channel`` protocol is met by an adapter itself (in a unit test, or the
CLI, which lives in the core) and by ``ChannelProcess``, which runs the adapter in a child
process of its own and speaks for it in the core.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..models import (
    MAX_BUTTON_DATA,
    Address,
    Decision,
    InboundMessage,
    OutboundFile,
    OutboundMessage,
)
from ..models import Button as Button  # adapters import these from here
from ..models import CardTap as CardTap
from ..models import DeliveryStatus as DeliveryStatus
from ..models import TapOutcome as TapOutcome

# loaded by every adapter process before it drops its privileges: host names are encoded with
# them on first connect, whatever the platform
HOST_NAME_MODULES = ("encodings.idna", "stringprep", "unicodedata")
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024  # per file; larger ones are named, not downloaded
MAX_ATTACHMENTS_TOTAL = 2 * MAX_ATTACHMENT_BYTES  # bytes of files in one message
MAX_ATTACHMENTS = 10  # per message
MB = 1024 * 1024
# the largest file any platform takes from us (``ChannelPlugin.max_file_bytes`` is each one's);
# an agent's send_file is refused past it before a byte of it is read
MAX_FILE_BYTES = 100 * MB

Finding = tuple[str, str] | None
"""What a doctor probe found: None (fine) or ``(problem, fix)``."""
Probe = Callable[[Any], Awaitable[Finding]]
"""`clawpen doctor`'s check of one platform: its settings in, a ``Finding`` out. One cheap,
read-only call (it never sends a message) that says whether the platform answers and takes the
configured credentials; a network failure and a refusal are told apart, since their fixes
differ."""

Accept = Callable[[InboundMessage], Awaitable[Decision | None]]
"""Commits a message and decides its route; ``None`` for a duplicate. Returns once committed;
raises ``StoreUnavailable`` when it could not commit (then the platform must not be told we
have the message: it will hand it out again)."""


async def report_status(accept: Accept, status: DeliveryStatus) -> None:
    """Hand a delivery status to the core, which records it against the reply. The core's
    ``accept`` carries ``delivery_status``; a bare function (a unit test's) is skipped."""
    report = getattr(accept, "delivery_status", None)
    if report is not None:
        await report(status)


async def report_reach(accept: Accept, state: str, error: str) -> None:
    """Hand an adapter process's word on its platform (``running`` | ``unreachable``, with the
    cause) to the core, which shows it in ``clawpen status``; a bare function is skipped."""
    report = getattr(accept, "channel_state", None)
    if report is not None:
        await report(state, error)


async def connected(accept: Accept) -> None:
    """Tell the core the adapter has talked to its platform (``reach.py``): called by each
    adapter once it has (again) an answer. A bare function (a unit test's) is skipped."""
    report = getattr(accept, "connected", None)
    if report is not None:
        await report()


async def report_tap(accept: Accept, tap: CardTap) -> TapOutcome:
    """Hand a button tap to the core and return its answer (a notice for the tapper, the
    card's new text). The core's ``accept`` carries ``tap``; a bare function (a unit test's)
    yields an empty outcome. Raises ``StoreUnavailable`` when the core could not record it."""
    report = getattr(accept, "tap", None)
    if report is None:
        return TapOutcome("", "")
    outcome: TapOutcome = await report(tap)
    return outcome


MAX_TAP_ID = 256  # characters of a tap's chat, thread, sender or message id (as the wire's)


def tap_problem(tap: CardTap) -> str | None:
    """Why a tap a platform delivered cannot be a card's (its data is not a button's, an id
    is missing or oversized), or None. An adapter drops such a tap with a log line instead of
    handing the core what its wire would refuse."""
    if not tap.data or len(tap.data.encode("utf-8", "surrogatepass")) > MAX_BUTTON_DATA:
        return f"the button data is not 1 to {MAX_BUTTON_DATA} bytes"
    ids = {"chat": tap.address.chat, "sender": tap.sender_id, "message": tap.platform_id}
    for name, value in ids.items():
        if not value or len(value) > MAX_TAP_ID:
            return f"the tap's {name} id is empty or over {MAX_TAP_ID} characters"
    if len(tap.address.thread) > MAX_TAP_ID:
        return f"the tap's thread id is over {MAX_TAP_ID} characters"
    return None


def with_reply_codes(message: OutboundMessage) -> OutboundMessage:
    """The message for a platform without native buttons (yet): each button becomes a line
    "To <label>, reply with: <data>", and the core reads a reply of exactly that data as the
    tap of who sent it."""
    if not message.buttons:
        return message
    lines = [f"To {b.label}, reply with: {b.data}" for b in message.buttons]
    text = "\n".join([message.text, "", *lines])
    return replace(message, text=text, buttons=())


async def edit_card(channel: Channel, address: Address, platform_id: str, text: str) -> str:
    """``channel.edit``, or, for an adapter written before cards (a plug-in without ``edit``),
    ``text`` sent as a new message; returns the platform id of what now shows it."""
    edit = getattr(channel, "edit", None)
    if edit is None:
        return await channel.send(OutboundMessage(address, text))
    await edit(address, platform_id, text)
    return platform_id


class SendError(Exception):
    """Sending failed. ``retry_after`` is the platform's own wait, when it gave one;
    ``permanent`` when trying again cannot help (the bot was blocked, the chat is gone);
    ``about_message`` when the failure is this message's own (an adapter's error on it) and
    says nothing about the platform: it counts against the reply, never toward the channel's
    circuit breaker, so one bad reply cannot hold up every other chat."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        permanent: bool = False,
        about_message: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.about_message = about_message


class ChannelFatal(Exception):
    """The adapter cannot work at all (a refused token): the channel is disabled, with this
    message, until the configuration is fixed. Other channels go on."""


class Channel(Protocol):
    name: str
    max_message_length: int

    async def run(self, accept: Accept) -> None:
        """Receive messages until cancelled, handing each to ``accept`` before acknowledging
        it to the platform. Raises ``ChannelFatal`` when it cannot work at all."""

    async def send(self, message: OutboundMessage) -> str:
        """Deliver one message of at most ``max_message_length`` (with its ``buttons``, natively
        or as ``with_reply_codes`` lines); returns its platform id. Raises SendError."""

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """Replace the text of a card sent earlier (``platform_id``, as ``send`` returned it)
        with ``text`` and remove its buttons. A platform that cannot edit sends ``text`` as a
        new message instead. Raises SendError."""

    async def send_file(self, file: OutboundFile) -> str:
        """Deliver one file (at most the plug-in's ``max_file_bytes``) the way the platform's
        users expect it (a photo as a photo); returns its platform id. Raises SendError."""

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """Show (``active``) or stop showing that the agent is working on ``message_id`` in
        ``address``. Called again every few seconds while it works, and once with
        ``active=False`` at the end. Best effort: it never raises."""


async def read_capped(
    chunks: AsyncIterator[bytes], limit: int = MAX_ATTACHMENT_BYTES
) -> bytes | None:
    """A download's bytes, or None once it passes ``limit``, whatever size it announced."""
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def files_not_supported(platform: str) -> SendError:
    """What an adapter that cannot send files yet answers ``send_file`` with: a permanent
    failure (retrying cannot help), about this message only."""
    return SendError(
        f"files are not supported on {platform} yet", permanent=True, about_message=True
    )


def skipped_attachment_note(name: str, size: int) -> str:
    """The line a message carries instead of a file too large to download."""
    megabytes = size / (1024 * 1024)
    limit = MAX_ATTACHMENT_BYTES // (1024 * 1024)
    return f"[{name}: not downloaded, {megabytes:.1f} MB is over the {limit} MB limit]"


# -- settings shared by every channel -----------------------------------------------------------


class RateLimitSettings(BaseModel):
    """Sends per second, per chat and for the whole channel; 0 turns a limit off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_chat: float = Field(default=1.0, ge=0)
    per_chat_burst: int = Field(default=5, ge=1)
    overall: float = Field(default=30.0, ge=0)
    overall_burst: int = Field(default=30, ge=1)
    # answers to unpaired chats (pairing codes): a budget of their own, within ``overall``
    strangers: float = Field(default=1.0, ge=0)
    strangers_burst: int = Field(default=5, ge=1)


class ChannelSettings(BaseModel):
    """The base of every channel's block under ``channels:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit: RateLimitSettings | None = None  # None: the platform's own defaults
    # a chat that is not paired: ignored (reject), or offered a one-time pairing code (code)
    unknown_senders: Literal["reject", "code"] = "reject"


DEFAULT_RATE_LIMIT = RateLimitSettings()


@dataclass(frozen=True)
class ChannelPlugin:
    """A platform's registration (an entry point in the ``clawpen.channels`` group): its package's
    ``plugin``."""

    name: str  # the key under channels: and the prefix of its addresses ("telegram")
    settings: type[ChannelSettings]
    adapter: Callable[[Any], Channel]  # settings -> adapter; imports the platform's SDK lazily
    chat_pattern: str  # what a chat id looks like on this platform (a regex)
    chat_example: str  # shown in errors: "telegram:123456789"
    max_message_length: int
    rate_limit: RateLimitSettings = DEFAULT_RATE_LIMIT
    in_process: bool = False  # True only for the CLI: it holds no credential
    credentials: tuple[str, ...] = ()  # settings fields that hold secrets (never logged)
    # modules the adapter imports only when it first needs them: loaded before its process
    # gives up its privileges, as it may not be able to read them afterwards
    preload: tuple[str, ...] = ()
    probe: Probe | None = None  # `clawpen doctor`'s check of it; None: only "configured"
    # the platform's upload limit for one file (``Channel.send_file``); an agent's file over it
    # is refused to the agent, naming the limit
    max_file_bytes: int = 10 * MB

    def chat_problem(self, chat: str) -> str | None:
        """Why ``chat`` is not a chat id on this platform, or None if it is."""
        if re.fullmatch(self.chat_pattern, chat):
            return None
        return f"{chat!r} is not a {self.name} chat id (for example {self.chat_example})"

    def limits(self, settings: ChannelSettings) -> RateLimitSettings:
        return settings.rate_limit or self.rate_limit
