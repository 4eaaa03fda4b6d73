"""Slack through slack_sdk: Socket Mode in, the Web API (chat.postMessage) out; approval cards
as Block Kit buttons, their taps as ``block_actions`` over Socket Mode; files back through the
external-upload flow (``files_upload_v2``).

Each Socket Mode envelope is acknowledged only after its message was committed (``accept``
returned). When the store cannot commit, the envelope is left unacknowledged and Slack delivers
it again; a message Slack delivers twice (``retry_attempt``) is dropped by the core, keyed by its
``ts``. Messages from bots (ours included), edits, deletions and joins are acknowledged and
dropped: they are not tasks.

A tap is acknowledged at once (Slack shows the tapper an error after 3 seconds without it, and
does not deliver it again): then the core decides, and the card is updated with ``chat.update``
(its buttons gone) or the tapper alone is told why not (``chat.postEphemeral``).

Slack has no typing indicator for bots: a reaction (:eyes:) on the user's message says the
agent is on it, and goes away when it is done.

This adapter runs in a process of its own (``process.py``); slack_sdk is imported there, never
in the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field

from ... import netenv
from ...models import Address, Attachment, InboundMessage, OutboundFile, OutboundMessage
from ...obs.logging import get_logger
from ...retry import PLATFORM, Retrier
from ...store.base import StoreUnavailable
from ..base import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    Accept,
    Button,
    CardTap,
    ChannelFatal,
    ChannelSettings,
    SendError,
    TapOutcome,
    connected,
    read_capped,
    report_tap,
    skipped_attachment_note,
    tap_problem,
)
from ..reach import cause_of

if TYPE_CHECKING:
    import aiohttp
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest
    from slack_sdk.web.async_client import AsyncWebClient

MAX_MESSAGE_LENGTH = 4000  # Slack takes 40,000 characters, but advises 4,000 a message
MAX_FILE_BYTES = 100 * 1024 * 1024  # Slack takes 1 GB; an agent's file is capped lower
MAX_SECTION_TEXT = 3000  # characters of a Block Kit section's text
MAX_BUTTON_TEXT = 75  # characters of a button's label
CARD_BLOCK_ID = "clawpen-card"  # the actions block under a card
NOT_RECORDED = "Not recorded (the store is busy); tap again shortly."
WORKING_REACTION = "eyes"
# Slack's answers that mean the token itself is no good: the channel cannot work at all
REFUSED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
    | {"not_allowed_token_type", "missing_scope", "no_permission"}
)
# errors of chat.postMessage worth trying again; every other Slack error cannot pass
TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# the only subtype that is still a user's message: one with files
USER_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})


class SlackSettings(ChannelSettings):
    bot_token: str = Field(repr=False)  # xoxb-...: the Web API
    app_token: str = Field(repr=False)  # xapp-...: Socket Mode
    api_base_url: str = "https://slack.com/api"
    # seconds between WebSocket pings; a connection silent for four of them is replaced
    ping_interval: float = Field(5.0, gt=0, le=60)


class SlackAdapter:
    name = "slack"
    max_message_length = MAX_MESSAGE_LENGTH

    def __init__(self, settings: SlackSettings) -> None:
        self.settings = settings
        self.log = get_logger()
        self.bot_user_id = ""
        self._web: AsyncWebClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self._reacted: set[tuple[str, str]] = set()  # (channel, ts) we put a reaction on
        self._broken: asyncio.Future[None] | None = None
        self._turns: dict[str, _Turn] = {}

    def _client(self) -> AsyncWebClient:
        """Built on first use, inside the event loop (aiohttp's session needs one). No retry
        handlers: a send the SDK repeated on its own could be posted twice; the core retries."""
        if self._web is None:
            from slack_sdk.web.async_client import AsyncWebClient

            base = self.settings.api_base_url.rstrip("/") + "/"  # slack_sdk joins with it
            net = netenv.current()
            self._web = AsyncWebClient(
                token=self.settings.bot_token,
                base_url=base,
                timeout=30,
                retry_handlers=[],
                ssl=net.ssl_context(),
            )
            # set after: the SDK reads HTTPS_PROXY on its own when given none, but not NO_PROXY
            self._web.proxy = net.proxy_for(base)
        return self._web

    async def run(self, accept: Accept) -> None:
        from slack_sdk.socket_mode.aiohttp import SocketModeClient

        web = self._client()
        auth = await self._until_answered(web.auth_test, "bot_token")
        self.bot_user_id = str(auth.get("user_id", ""))
        opened = await self._until_answered(
            lambda: web.apps_connections_open(app_token=self.settings.app_token), "app_token"
        )
        self._broken = asyncio.get_running_loop().create_future()
        client = SocketModeClient(
            app_token=self.settings.app_token,
            web_client=web,
            ping_interval=self.settings.ping_interval,
        )
        client.proxy = netenv.current().proxy_for(str(opened["url"]))  # as for the web client
        client.wss_uri = str(opened["url"])

        async def on_request(client: SocketModeClient, request: SocketModeRequest) -> None:
            await self._handle(client, request, accept)

        client.socket_mode_request_listeners.append(on_request)  # type: ignore[arg-type]
        try:
            await client.connect()  # type: ignore[no-untyped-call]
            await connected(accept)
            self.log.info("channel_connected", channel=self.name, bot_user=self.bot_user_id)
            await self._broken  # the SDK reconnects by itself; this ends only on our own bug
        finally:
            await client.close()  # type: ignore[no-untyped-call]
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def _until_answered(self, call: Any, key: str) -> Any:
        """A start-up call, tried until Slack answers it; a refused token is fatal."""
        import aiohttp
        from slack_sdk.errors import SlackApiError

        retrier = Retrier(PLATFORM)
        while True:
            try:
                return await call()
            except SlackApiError as exc:
                status, headers, error = _answer(exc)
                if error in REFUSED:
                    raise ChannelFatal(
                        f"slack: the {key.replace('_', ' ')} was refused ({error}); "
                        f"check channels.slack.{key}"
                    ) from None
                retry_after = _retry_after(headers) if status == 429 else None
                reason = error or f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                if cause_of(exc) is not None:
                    raise  # nothing answered: reach.py says so and tries again
                retry_after, reason = None, f"{type(exc).__name__}: {exc}"
            delay = retrier.next_delay(retry_after)
            self.log.warning("channel_error", channel=self.name, error=reason, retryIn=delay)
            await asyncio.sleep(delay)

    async def _handle(
        self, client: SocketModeClient, request: SocketModeRequest, accept: Accept
    ) -> None:
        """One envelope: hand its message over, then acknowledge it (never before). A button's
        tap is acknowledged first: Slack wants that within 3 seconds, and never repeats it."""
        if request.type == "interactive":
            await self._ack(client, request)
            await self._tap(request.payload, accept)
            return
        try:
            message = (
                _inbound(request.payload.get("event"), self.bot_user_id)
                if request.type == "events_api"
                else None
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.log.warning(
                "channel_bad_event", channel=self.name, envelope=request.envelope_id, error=str(exc)
            )
            message = None
        if message is not None:
            files = request.payload["event"].get("files")
            files = files if isinstance(files, list) else []
            async with self._turn(message.address.chat):
                if not await self._commit(message, files, accept):
                    return
        await self._ack(client, request)

    async def _ack(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        from slack_sdk.socket_mode.response import SocketModeResponse

        try:
            await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))
        except Exception as exc:  # the connection went: Slack delivers it again, deduplicated
            self.log.warning("channel_ack_failed", channel=self.name, error=str(exc))

    async def _tap(self, payload: Any, accept: Accept) -> None:
        """A button pressed on a card: the core decides, then the card shows the decision
        without its buttons, or the tapper alone reads why not. Who tapped is Slack's word
        (``user.id``); a payload that is not a tap on a message of ours is logged and dropped."""
        try:
            tap = _card_tap(payload)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.log.warning("channel_bad_tap", channel=self.name, error=str(exc))
            return
        if tap is None:
            return  # another kind of interaction (a modal, a shortcut): not ours
        try:
            outcome = await report_tap(accept, tap)
        except StoreUnavailable as exc:
            self.log.error("store_unwritable", channel=self.name, error=str(exc))
            outcome = TapOutcome(NOT_RECORDED, "")
        except Exception as exc:  # the bridge broke: end run() with it
            if self._broken is not None and not self._broken.done():
                self._broken.set_exception(exc)
            return
        await self._show(tap, outcome)

    async def _show(self, tap: CardTap, outcome: TapOutcome) -> None:
        from slack_sdk.errors import SlackApiError

        client = self._client()
        thread: dict[str, Any] = {"thread_ts": tap.address.thread} if tap.address.thread else {}
        try:
            if outcome.card:
                await self._update(tap.address.chat, tap.platform_id, outcome.card)
            elif outcome.notice:
                await client.chat_postEphemeral(
                    channel=tap.address.chat,
                    user=tap.sender_id,
                    text=_escape(outcome.notice),
                    **thread,
                )
        except (SlackApiError, SendError) as exc:  # the decision stands; only its display failed
            self.log.warning("channel_tap_answer_failed", channel=self.name, error=str(exc))

    @contextlib.asynccontextmanager
    async def _turn(self, chat: str) -> AsyncIterator[None]:
        """One message of a chat at a time, in the order Slack delivered them (the SDK handles
        envelopes concurrently, and a file download must not let a later message pass)."""
        turn = self._turns.setdefault(chat, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[chat]

    async def _commit(
        self, message: InboundMessage, files: list[dict[str, Any]], accept: Accept
    ) -> bool:
        """Download its files and hand it to the core; whether it was committed."""
        if files:
            message = await self._with_files(message, files)
        try:
            await accept(message)
        except StoreUnavailable as exc:  # not acknowledged: Slack delivers it again
            self.log.error("store_unwritable", channel=self.name, error=str(exc))
            return False
        except Exception as exc:  # the bridge broke: end run() with it
            if self._broken is not None and not self._broken.done():
                self._broken.set_exception(exc)
            return False
        return True

    async def _with_files(
        self, message: InboundMessage, files: list[dict[str, Any]]
    ) -> InboundMessage:
        """Download what fits; name what does not, so the agent knows it was sent."""
        attachments: list[Attachment] = []
        notes: list[str] = []
        for index, file in enumerate(files):
            if not isinstance(file, dict):
                continue
            name = str(file.get("name") or file.get("title") or file.get("id") or "file")
            size = _int(file.get("size"))
            if index >= MAX_ATTACHMENTS:
                notes.append(f"[{name}: not downloaded, over {MAX_ATTACHMENTS} files]")
            elif size > MAX_ATTACHMENT_BYTES:
                notes.append(skipped_attachment_note(name, size))
            else:
                data, problem = await self._download(str(file.get("url_private_download") or ""))
                if data is None:
                    notes.append(f"[{name}: not downloaded, {problem}]")
                    self.log.warning("channel_download_failed", channel=self.name, error=problem)
                else:
                    mimetype = str(file.get("mimetype") or "application/octet-stream")
                    attachments.append(Attachment(name, mimetype, data))
        text = "\n".join([message.text, *notes]) if notes else message.text
        return InboundMessage(
            address=message.address,
            sender_id=message.sender_id,
            text=text.strip(),
            platform_id=message.platform_id,
            received_at=message.received_at,
            reply_to=message.reply_to,
            attachments=tuple(attachments),
            addressed=message.addressed,
        )

    async def _download(self, url: str) -> tuple[bytes | None, str]:
        """A file's bytes with the bot token (capped while streaming), or why not. The token
        goes only to Slack's own hosts (or the configured API host)."""
        import aiohttp

        if not _token_may_go_to(url, self.settings.api_base_url):
            return None, "its address is not Slack's"
        if self._http is None:
            base = self.settings.api_base_url
            self._http = netenv.current().session(base, timeout=aiohttp.ClientTimeout(total=120))
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"}
        try:
            async with self._http.get(url, headers=headers, allow_redirects=False) as response:
                if response.status != 200:
                    return None, f"HTTP {response.status}"
                data = await read_capped(response.content.iter_chunked(64 * 1024))
                if data is None:
                    return None, f"over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB limit"
                return data, ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}"

    async def send(self, message: OutboundMessage) -> str:
        """A message; a card is its text in sections and its buttons in an actions block, with
        the text also as the notification's fallback."""
        address = message.address
        options: dict[str, Any] = {}
        if address.thread:
            options["thread_ts"] = address.thread
        if message.buttons:
            options["blocks"] = card_blocks(message.text, message.buttons)
        response = await _called(
            self._client().chat_postMessage(
                channel=address.chat, text=_escape(message.text), **options
            )
        )
        return str(response.get("ts", ""))

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """``chat.update``: the card's new text, its blocks (and so its buttons) gone."""
        await self._update(address.chat, platform_id, text)

    async def _update(self, channel: str, ts: str, text: str) -> None:
        await _called(
            self._client().chat_update(
                channel=channel, ts=ts, text=_escape(text[:MAX_MESSAGE_LENGTH]), blocks=[]
            )
        )

    async def send_file(self, file: OutboundFile) -> str:
        """Slack's external upload (``files.getUploadURLExternal``, the bytes to the URL it
        gives, ``files.completeUploadExternal`` into the chat and thread), the caption as the
        file's comment; returns the file's id."""
        if len(file.data) > MAX_FILE_BYTES:
            raise SendError(
                f"slack: {file.name} is over the {MAX_FILE_BYTES // (1024 * 1024)} MB limit",
                permanent=True,
                about_message=True,
            )
        options: dict[str, Any] = {}
        if file.address.thread:
            options["thread_ts"] = file.address.thread
        if file.caption:
            options["initial_comment"] = _escape(file.caption)
        response = await _called(
            self._client().files_upload_v2(
                channel=file.address.chat,
                file=file.data,
                filename=file.name,
                title=file.name,
                **options,
            )
        )
        files = response.get("files")
        first = files[0] if isinstance(files, list) and files else {}
        return str(first.get("id", "") if isinstance(first, dict) else "")

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """A reaction on the user's message while the agent works on it."""
        key = (address.chat, message_id)
        if active == (key in self._reacted) or not message_id:
            return  # already shown, or nothing to take away
        client = self._client()
        try:
            if active:
                self._reacted.add(key)
                await client.reactions_add(
                    channel=address.chat, timestamp=message_id, name=WORKING_REACTION
                )
            else:
                self._reacted.discard(key)
                await client.reactions_remove(
                    channel=address.chat, timestamp=message_id, name=WORKING_REACTION
                )
        except Exception as exc:  # best effort: a missing indicator costs nobody a message
            self.log.debug("channel_typing_failed", channel=self.name, error=str(exc))


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _inbound(event: Any, bot_user_id: str) -> InboundMessage | None:
    """A user's message, or None for what is not a task (bots, edits, deletions, joins).

    >>> _inbound({"type": "message", "channel": "C1", "channel_type": "channel",
    ...           "user": "U1", "text": "<@UB> hi", "ts": "1.2"}, "UB").text
    'hi'
    """
    if not isinstance(event, dict) or event.get("type") != "message":
        return None
    if event.get("bot_id") or str(event.get("subtype") or "") not in USER_SUBTYPES:
        return None
    channel, ts = event["channel"], event["ts"]
    if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
        raise ValueError("a message event without its channel or ts")
    text = str(event.get("text") or "")
    mention = re.compile(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>") if bot_user_id else None
    mentioned = bool(mention and mention.search(text))
    if mention is not None:
        text = mention.sub("", text)
    thread = event.get("thread_ts")
    return InboundMessage(
        address=Address("slack", channel, str(thread) if thread else ""),
        sender_id=str(event.get("user") or ""),
        text=html.unescape(re.sub(r"[ \t]{2,}", " ", text)).strip(),
        platform_id=ts,
        received_at=float(ts),
        addressed=event.get("channel_type") == "im" or mentioned,
    )


def card_blocks(text: str, buttons: Sequence[Button]) -> list[dict[str, Any]]:
    """A card in Block Kit: its text in sections (3,000 characters each), then one actions
    block whose buttons carry the button's data as ``action_id`` and ``value``."""
    sections = [
        {"type": "section", "text": {"type": "mrkdwn", "text": part}}
        for part in _escaped_parts(text, MAX_SECTION_TEXT)
    ]
    elements = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": b.label[:MAX_BUTTON_TEXT]},
            "action_id": b.data,
            "value": b.data,
        }
        for b in buttons
    ]
    return [*sections, {"type": "actions", "block_id": CARD_BLOCK_ID, "elements": elements}]


def _escaped_parts(text: str, limit: int) -> list[str]:
    """``text`` escaped, in parts of at most ``limit`` characters, none splitting an entity."""
    parts: list[str] = []
    current = ""
    for char in text:
        piece = _escape(char)
        if len(current) + len(piece) > limit:
            parts.append(current)
            current = ""
        current += piece
    if current.strip() or not parts:
        parts.append(current if current.strip() else " ")
    return parts


def _card_tap(payload: Any) -> CardTap | None:
    """The tap in a ``block_actions`` payload on a message; None for other interactions.
    Raises (KeyError, TypeError, ValueError) on one that is malformed."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    container = payload["container"]
    if container.get("type") != "message" or container.get("is_ephemeral"):
        return None
    (action,) = payload["actions"]  # a button press carries exactly one action
    if action.get("type") != "button":
        return None
    message = payload.get("message") or {}
    ts = _word(container["message_ts"], "container.message_ts")
    thread = message.get("thread_ts") if isinstance(message, dict) else None
    thread = str(thread) if isinstance(thread, str) and thread != ts else ""
    tap = CardTap(
        address=Address("slack", _word(container["channel_id"], "container.channel_id"), thread),
        sender_id=_word(payload["user"]["id"], "user.id"),
        data=_word(action.get("value") or action["action_id"], "action.value"),
        platform_id=ts,
    )
    problem = tap_problem(tap)
    if problem is not None:
        raise ValueError(problem)
    return tap


def _word(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a non-empty string")
    return value


async def _called(call: Awaitable[Any]) -> Any:
    """A Web API call's response; Slack's refusals and an unreachable Slack as ``SendError``."""
    import aiohttp
    from slack_sdk.errors import SlackApiError, SlackRequestError

    try:
        return await call
    except SlackApiError as exc:
        raise _send_error(*_answer(exc)) from None
    except SlackRequestError as exc:  # the upload URL refused the bytes
        found = re.search(r"status: (\d+)", str(exc))
        raise _send_error(int(found.group(1)) if found else 500, None, "") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SendError(f"slack: {type(exc).__name__}: {exc}") from None


def _escape(text: str) -> str:
    """Slack reads ``<``, ``>`` and ``&`` as markup; the agent means them literally."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _answer(exc: Any) -> tuple[int, Any, str]:
    """Status, headers and Slack's ``error`` of a SlackApiError (whose ``response`` is the
    SDK's response, or aiohttp's when the body was not JSON)."""
    response = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", 0)
    data = getattr(response, "data", None)
    error = str(data.get("error", "")) if isinstance(data, dict) else ""
    return int(status or 0), getattr(response, "headers", None), error


def _send_error(status: int, headers: Any, error: str) -> SendError:
    """chat.postMessage's failure as the core's outbox needs it: 429 with Slack's wait, 5xx to
    try again, and what cannot pass (a channel gone, a revoked token) as permanent."""
    if status == 429:
        return SendError("slack: rate limited", retry_after=_retry_after(headers) or 1.0)
    if status >= 500 or status == 408:
        return SendError(f"slack: HTTP {status}")
    if status != 200:
        return SendError(f"slack: HTTP {status}", permanent=True)
    return SendError(f"slack: {error or 'unknown error'}", permanent=error not in TRANSIENT)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("Retry-After")) if headers else None
    except (TypeError, ValueError):
        return None


def _token_may_go_to(url: str, api_base_url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == urlsplit(api_base_url).hostname:
        return True
    return parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))
