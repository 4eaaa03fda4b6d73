"""WhatsApp through the official Cloud API: Meta's webhooks in, the Graph API out.

In: Meta POSTs each event to ``listen`` + ``/webhooks/whatsapp`` (a TLS proxy or tunnel forwards
there). The ``X-Hub-Signature-256`` is checked against the raw body before anything else is read;
then every message is handed to the core, and the POST is answered 200 only once all are
committed. Meta redelivers whatever was not answered 200 (and sometimes what was): the core drops
the copies by the message's wamid. Media are downloaded through the Graph API while the POST
waits (Meta's media URLs expire in minutes, so later is worse), up to ``MAX_ATTACHMENT_BYTES``.

Out: ``POST /{phone_number_id}/messages``. WhatsApp takes a free-form reply only within 24 hours
of the user's last message; a reply refused for that (error 131047) is a permanent ``SendError``
saying so, and a refusal that Meta reports later, in a status webhook, is passed to the core as a
``DeliveryStatus`` with ``window_closed``.

The Graph API is spoken over aiohttp, already the webhook server's library: pywa would bring its
own web-framework integration and handler model, which does not fit "acknowledge only after the
commit" nor an adapter in a process of its own, for four HTTP calls.

Reactions are not handed to the agent: a thumbs-up under its answer is not a question, and each
would cost a model turn and an unwanted reply.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from ...models import Address, Attachment, InboundMessage, OutboundFile, OutboundMessage
from ...obs.logging import get_logger
from ...ports.limits import PortLimits
from ..base import (
    MAX_ATTACHMENT_BYTES,
    Accept,
    ChannelFatal,
    ChannelSettings,
    DeliveryStatus,
    SendError,
    files_not_supported,
    read_capped,
    report_status,
    skipped_attachment_note,
    with_reply_codes,
)
from .events import Media, Message, Webhook, graph_error, send_error, send_outcome

if TYPE_CHECKING:
    import aiohttp

    from ..webhook import WebhookRequest, WebhookResponse

MAX_MESSAGE_LENGTH = 4096
SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")  # X-Hub-Signature-256, checked on the head
WEBHOOK_PATH = "/webhooks/whatsapp"
HTTP_TIMEOUT = 30.0
MEDIA_TRIES = 3
TYPING_REMEMBERED = 1000  # message ids already marked read (typing is shown once per message)
EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/amr": ".amr",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}


class WhatsAppSettings(ChannelSettings):
    phone_number_id: str
    access_token: str = Field(repr=False)
    app_secret: str = Field(repr=False)  # checks X-Hub-Signature-256 on every webhook
    verify_token: str = Field(repr=False)  # the webhook subscription handshake
    api_base_url: str = "https://graph.facebook.com/v21.0"
    listen: str = "127.0.0.1:8787"
    port_limits: PortLimits = PortLimits(max_connections=64)  # the webhook's connections

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        from ..webhook import parse_listen

        parse_listen(value)
        return value

    @field_validator("phone_number_id", mode="before")
    @classmethod
    def _digits(cls, value: object) -> object:
        """Digits, quoted or not: YAML reads ``106540352242922`` unquoted as a number."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            raise ValueError(f"{value!r} is not a phone number id (digits, from Meta's app)")
        return value


class WhatsAppAdapter:
    name = "whatsapp"
    max_message_length = MAX_MESSAGE_LENGTH

    def __init__(self, settings: WhatsAppSettings) -> None:
        from ..webhook import WebhookServer, parse_listen

        self.settings = settings
        self.log = get_logger()
        self.base = settings.api_base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {settings.access_token}"}
        host, port = parse_listen(settings.listen)
        self.server = WebhookServer(
            self.name,
            host,
            port,
            {WEBHOOK_PATH: self._webhook},
            limits=settings.port_limits,
            head_checks={WEBHOOK_PATH: check_head},
        )
        self.listening = asyncio.Event()  # set once the webhook server is up (tests wait on it)
        self._http: aiohttp.ClientSession | None = None
        self._accept: Accept | None = None
        self._typed: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def url(self) -> str:
        """The webhook's URL as bound (the real port when ``listen`` asked for port 0)."""
        return self.server.url + WEBHOOK_PATH

    async def run(self, accept: Accept) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            self._http = http
            self._accept = accept
            try:
                await self._check_credentials()
                await self._serve()
            finally:
                self._http = None

    async def _serve(self) -> None:
        """Serve webhooks until cancelled; an address we cannot bind cannot work at all."""
        bound = False
        try:
            async with self.server.running():
                bound = True
                self.listening.set()
                await asyncio.Event().wait()
        except OSError as exc:
            if bound:
                raise
            raise ChannelFatal(
                f"whatsapp: cannot listen on {self.settings.listen} ({exc.strerror});"
                " change channels.whatsapp.listen or free that port"
            ) from None
        finally:
            self.listening.clear()

    async def _check_credentials(self) -> None:
        """Ask the Graph API for our phone number: a refused token or an unknown number cannot
        work at all. An unreachable API can come back: webhooks are served meanwhile."""
        import aiohttp

        try:
            status, body, _ = await self._call("GET", f"/{self.settings.phone_number_id}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("channel_error", channel=self.name, error=f"Graph API: {exc!r}")
            return
        code, message = graph_error(_json(body))
        if status == 401 or code == 190:
            raise ChannelFatal(
                "whatsapp: the access token was refused; check channels.whatsapp.access_token"
            )
        if status in (400, 404) and code == 100:
            raise ChannelFatal(
                f"whatsapp: phone number id {self.settings.phone_number_id} is unknown to this"
                " access token; check channels.whatsapp.phone_number_id"
            )
        if status != 200:
            self.log.warning(
                "channel_error", channel=self.name, error=f"Graph API: HTTP {status} {message}"
            )

    # -- in ---------------------------------------------------------------------------------------

    async def _webhook(self, request: WebhookRequest) -> WebhookResponse:
        from ..webhook import Refused, WebhookResponse, sha256_signature_matches
        from .events import Malformed, parse_webhook

        if request.method == "GET":
            return WebhookResponse(200, self._handshake(request))
        signature = request.headers.get("X-Hub-Signature-256")
        secret = self.settings.app_secret.encode()
        if not sha256_signature_matches(secret, request.body, signature):
            raise Refused(401, "signature missing" if signature is None else "signature wrong")
        try:
            webhook = parse_webhook(request.body, self.settings.phone_number_id)
        except Malformed as exc:
            raise Refused(400, f"malformed: {exc}") from None
        await self._hand_over(webhook)
        return WebhookResponse(200, "ok")

    def _handshake(self, request: WebhookRequest) -> str:
        """Meta's subscription check: echo ``hub.challenge`` when ``hub.verify_token`` is ours."""
        from ..webhook import Refused, secret_matches

        query = request.query
        if query.get("hub.mode") != "subscribe":
            raise Refused(403, "handshake without hub.mode=subscribe")
        if not secret_matches(self.settings.verify_token, query.get("hub.verify_token")):
            raise Refused(403, "handshake with a wrong verify_token")
        challenge = query.get("hub.challenge", "")
        if not challenge or len(challenge) > 256:
            raise Refused(400, "handshake without a usable hub.challenge")
        self.log.info("webhook_verified", channel=self.name)
        return challenge

    async def _hand_over(self, webhook: Webhook) -> None:
        """Every message to the core, together (they commit together); then the statuses.
        Raises ``StoreUnavailable`` when anything was not committed: Meta delivers it again."""
        accept = self._accept
        assert accept is not None
        for reason in webhook.ignored:
            self.log.debug("webhook_ignored", channel=self.name, reason=reason)
        inbound = await asyncio.gather(*(self._inbound(m) for m in webhook.messages))
        outcomes = await asyncio.gather(*(accept(m) for m in inbound), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        for status in webhook.statuses:
            delivery = DeliveryStatus(
                status.recipient, status.wamid, status.status, status.error, status.window_closed
            )
            level = "warning" if status.status == "failed" else "debug"
            getattr(self.log, level)(
                "delivery_status",
                channel=self.name,
                chat=status.recipient,
                platformId=status.wamid,
                status=status.status,
                error=status.error,
                windowClosed=status.window_closed,
            )
            await report_status(accept, delivery)

    async def _inbound(self, message: Message) -> InboundMessage:
        text = message.text
        attachments: tuple[Attachment, ...] = ()
        if message.media is not None:
            file, note = await self._download(message.media)
            attachments = (file,) if file is not None else ()
            text = "\n".join(part for part in (text, note) if part)
        return InboundMessage(
            address=Address(self.name, message.wa_id),
            sender_id=message.wa_id,
            text=text,
            platform_id=message.wamid,
            received_at=message.timestamp or time.time(),
            reply_to=message.reply_to,
            attachments=attachments,
            addressed=True,  # Cloud API chats are one to one
        )

    async def _download(self, media: Media) -> tuple[Attachment | None, str]:
        """The file, or ``None`` and the line the agent reads instead. ``GET /{media_id}`` says
        where it is and how large; the download itself needs the token too."""
        import aiohttp

        name = media.filename or _file_name(media)
        error = ""
        for attempt in range(MEDIA_TRIES):
            if attempt:
                await asyncio.sleep(0.5 * 2**attempt)
            try:
                status, body, _ = await self._call("GET", f"/{media.media_id}")
                info = _json(body)
                if status != 200 or not isinstance(info, dict):
                    error = f"HTTP {status} {graph_error(info)[1]}".strip()
                    if 400 <= status < 500 and status not in (408, 429):
                        break
                    continue
                size = info.get("file_size")
                size = int(size) if isinstance(size, int | str) and str(size).isdigit() else None
                if size is not None and size > MAX_ATTACHMENT_BYTES:
                    return None, skipped_attachment_note(name, size)
                url = info.get("url")
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    error = "the Graph API gave no download URL"
                    break
                data = await self._fetch(url)
                if data is None:
                    return None, skipped_attachment_note(name, size or MAX_ATTACHMENT_BYTES + 1)
                mime = str(info.get("mime_type") or media.mime_type).split(";")[0].strip()
                return Attachment(name, mime.lower() or media.mime_type, data), ""
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        self.log.warning(
            "attachment_failed", channel=self.name, mediaId=media.media_id, error=error
        )
        return None, f"[{name}: could not be downloaded from WhatsApp]"

    async def _fetch(self, url: str) -> bytes | None:
        """The media's bytes, or None past ``MAX_ATTACHMENT_BYTES`` (whatever it claimed)."""
        assert self._http is not None
        async with self._http.get(url, headers=self._auth) as response:
            if response.status != 200:
                raise ValueError(f"download answered HTTP {response.status}")
            if (response.content_length or 0) > MAX_ATTACHMENT_BYTES:
                return None
            return await read_capped(response.content.iter_chunked(64 * 1024))

    # -- out --------------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> str:
        message = with_reply_codes(message)  # native buttons: later, per CONTRACT.md
        import aiohttp

        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.address.chat,
            "type": "text",
            "text": {"body": message.text, "preview_url": False},
        }
        if message.reply_to:
            body["context"] = {"message_id": message.reply_to}
        try:
            status, raw, headers = await self._call(
                "POST", f"/{self.settings.phone_number_id}/messages", body
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"whatsapp: {type(exc).__name__}: {exc}") from None
        return send_outcome(status, raw, headers.get("Retry-After"))

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """A card's decision, as a new message until this adapter edits natively."""
        await self.send(OutboundMessage(address, text))

    async def send_file(self, file: OutboundFile) -> str:
        """Native delivery comes later (see the files contract); until then it fails for good,
        and the agent's reply says so."""
        raise files_not_supported("WhatsApp")

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """Marks the user's message read and shows "typing..." (up to 25 s, or until our
        reply): once per message, as WhatsApp offers no "stop"; ``active=False`` is ignored."""
        if not active or not message_id or message_id in self._typed:
            return
        self._typed[message_id] = None
        while len(self._typed) > TYPING_REMEMBERED:
            self._typed.popitem(last=False)
        body = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
            "typing_indicator": {"type": "text"},
        }
        try:
            status, raw, _ = await self._call(
                "POST", f"/{self.settings.phone_number_id}/messages", body
            )
            if status != 200:
                error = str(send_error(status, _json(raw)))
                self.log.debug("channel_typing_failed", channel=self.name, error=error)
        except Exception as exc:  # best effort: a missing indicator costs nobody a message
            self.log.debug("channel_typing_failed", channel=self.name, error=repr(exc))

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """One Graph API call: its status, body (at most 1 MiB read) and headers."""
        http = self._http
        if http is None:
            raise SendError("whatsapp: the adapter is not running", retry_after=1.0)
        async with http.request(method, self.base + path, json=body, headers=self._auth) as r:
            raw = await r.content.read(1024 * 1024)
            return r.status, raw, dict(r.headers)


def check_head(method: str, headers: Mapping[str, str]) -> None:
    """Before a byte of a POST's body is read: without a well-formed ``X-Hub-Signature-256``
    it cannot be Meta's, so it is refused (401) unread, and its connection closed."""
    from ..webhook import Refused

    if method != "POST":
        return
    signature = headers.get("X-Hub-Signature-256")
    if signature is None:
        raise Refused(401, "signature missing")
    if not SIGNATURE.fullmatch(signature.strip()):
        raise Refused(401, "signature malformed")


def _json(body: bytes) -> Any:
    from ...ports import safejson

    try:
        return safejson.loads(body)
    except ValueError:
        return None


def _file_name(media: Media) -> str:
    """``image-<id>.jpg``: a name the agent can tell apart, from what WhatsApp told us."""
    kind = "voice" if media.voice else media.kind
    return f"{kind}-{media.media_id[-12:]}{EXTENSIONS.get(media.mime_type, '')}"
