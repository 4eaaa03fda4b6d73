"""WhatsApp through the official Cloud API: Meta's webhooks in, the Graph API out.

In: Meta POSTs each event to ``listen`` + ``/webhooks/whatsapp`` (a TLS proxy or tunnel forwards
there). The ``X-Hub-Signature-256`` is checked against the raw body before anything else is read;
then every message is handed to the core, and the POST is answered 200 only once all are
committed. Meta redelivers whatever was not answered 200 (and sometimes what was): the core drops
the copies by the message's wamid. Media are downloaded through the Graph API while the POST
waits (Meta's media URLs expire in minutes, so later is worse), up to ``MAX_ATTACHMENT_BYTES``.

Cards (messages with buttons) go out as ``interactive`` reply-button messages (``cards.py``);
a tap comes back in a webhook as a ``button_reply`` and is handed to the core as a ``CardTap``
(who tapped is Meta's ``from``), the POST answered 200 only once the core recorded it, and the
core's answer sent as a text reply under the card: WhatsApp cannot edit a message. Files go up
to ``/{phone_number_id}/media`` and out as an image or document message naming the upload.

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

from ... import netenv
from ...models import Address, Attachment, InboundMessage, OutboundFile, OutboundMessage
from ...obs.logging import get_logger
from ..base import (
    MAX_ATTACHMENT_BYTES,
    MB,
    Accept,
    CardTap,
    ChannelFatal,
    DeliveryStatus,
    SendError,
    connected,
    read_capped,
    report_status,
    report_tap,
    skipped_attachment_note,
)
from .cards import card_messages
from .events import Media, Message, Tap, Webhook, graph_error, send_error, send_outcome
from .media import (
    IMAGE_TYPES,
    MAX_CAPTION,
    MAX_DOCUMENT_BYTES,
    MAX_IMAGE_BYTES,
    file_name,
    upload_type,
)
from .settings import WhatsAppSettings

if TYPE_CHECKING:
    import aiohttp

    from ..webhook import WebhookRequest, WebhookResponse

MAX_MESSAGE_LENGTH = 4096
SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")  # X-Hub-Signature-256, checked on the head
WEBHOOK_PATH = "/webhooks/whatsapp"
HTTP_TIMEOUT = 30.0
MEDIA_TRIES = 3
TYPING_REMEMBERED = 1000  # message ids already marked read (typing is shown once per message)
TAPS_REMEMBERED = 1000  # taps already answered: a redelivered one is not decided nor shown twice


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
        self._tapped: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._answers: set[asyncio.Task[None]] = set()  # taps' answers being sent

    @property
    def url(self) -> str:
        """The webhook's URL as bound (the real port when ``listen`` asked for port 0)."""
        return self.server.url + WEBHOOK_PATH

    async def run(self, accept: Accept) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with netenv.current().session(self.base, timeout=timeout) as http:
            self._http = http
            self._accept = accept
            try:
                if await self._check_credentials():
                    await connected(accept)
                await self._serve()
            finally:
                for task in list(self._answers):
                    task.cancel()
                await asyncio.gather(*self._answers, return_exceptions=True)
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

    async def _check_credentials(self) -> bool:
        """Ask the Graph API for our phone number: a refused token or an unknown number cannot
        work at all. An unreachable API can come back: webhooks are served meanwhile."""
        import aiohttp

        try:
            status, body, _ = await self._call("GET", f"/{self.settings.phone_number_id}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("channel_error", channel=self.name, error=f"Graph API: {exc!r}")
            return False
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
        return status == 200

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
        for tap in webhook.taps:  # a tap is decided before the messages after it are read
            await self._tap(tap, accept)
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

    async def _tap(self, tap: Tap, accept: Accept) -> None:
        """A reply button pressed under a card: the core decides (``StoreUnavailable`` when it
        could not record it: the webhook is then not answered 200, and Meta delivers the tap
        again); its answer goes back as a text reply under the card, since WhatsApp cannot
        edit a message. A tap already answered (Meta's redelivery) is neither decided nor
        shown twice."""
        if tap.wamid in self._tapped:
            return
        outcome = await report_tap(
            accept,
            CardTap(Address(self.name, tap.wa_id), tap.wa_id, tap.data, tap.card),
        )
        self._tapped[tap.wamid] = None
        while len(self._tapped) > TAPS_REMEMBERED:
            self._tapped.popitem(last=False)
        text = outcome.card or outcome.notice
        if text:  # after the 200: a slow Graph API must not make Meta deliver the tap again
            answer = OutboundMessage(
                Address(self.name, tap.wa_id), text[:MAX_MESSAGE_LENGTH], reply_to=tap.card
            )
            task = asyncio.create_task(self._answer_tap(answer))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    async def _answer_tap(self, answer: OutboundMessage) -> None:
        try:
            await self.send(answer)
        except SendError as exc:  # the decision is recorded; only its display failed
            self.log.warning("channel_tap_answer_failed", channel=self.name, error=str(exc))

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

        name = media.filename or file_name(media)
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
        """A text, or a card: an ``interactive`` message with reply buttons (its text sent
        first on its own when too long for one, ``cards.py``); returns the wamid of the last
        message, the card's, which its taps name."""
        parts = card_messages(message)
        sent = ""
        for index, part in enumerate(parts):
            if message.reply_to and index == 0:
                part["context"] = {"message_id": message.reply_to}
            sent = await self._post_message(message.address.chat, part)
        return sent

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """WhatsApp cannot edit a message: the card's new text goes as a reply quoting it (its
        buttons stay, and a tap on them is answered by the core as already decided)."""
        await self.send(OutboundMessage(address, text[:MAX_MESSAGE_LENGTH], reply_to=platform_id))

    async def send_file(self, file: OutboundFile) -> str:
        """Uploaded (``POST /{phone_number_id}/media``), then sent as a message naming the
        upload: a JPEG or PNG up to 5 MB as an image, anything else as a document (up to 100
        MB) with its file name. Returns the message's wamid."""
        size = len(file.data)
        kind = "image" if file.media_type in IMAGE_TYPES else "document"
        limit = MAX_IMAGE_BYTES if kind == "image" else MAX_DOCUMENT_BYTES
        if size > limit:  # Meta classes an upload by its type: a PNG is an image, whatever size
            raise SendError(
                f"whatsapp: {file.name} is {size / MB:.1f} MB, over WhatsApp's"
                f" {limit // MB} MB limit for {'an image' if kind == 'image' else 'a document'}",
                permanent=True,
                about_message=True,
            )
        media_id = await self._upload(file, upload_type(file.media_type))
        content: dict[str, Any] = {"id": media_id}
        if kind == "document":
            content["filename"] = file.name
        if file.caption:
            content["caption"] = file.caption[:MAX_CAPTION]
        body: dict[str, Any] = {"type": kind, kind: content}
        if file.reply_to:
            body["context"] = {"message_id": file.reply_to}
        return await self._post_message(file.address.chat, body)

    async def _upload(self, file: OutboundFile, media_type: str) -> str:
        """The media id of ``file`` uploaded to the Graph API as ``media_type``."""
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", media_type)
        form.add_field("file", file.data, filename=file.name, content_type=media_type)
        http = self._http
        if http is None:
            raise SendError("whatsapp: the adapter is not running", retry_after=1.0)
        path = f"{self.base}/{self.settings.phone_number_id}/media"
        try:
            async with http.post(path, data=form, headers=self._auth) as response:
                raw = await response.content.read(1024 * 1024)
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"whatsapp: upload: {type(exc).__name__}: {exc}") from None
        answer = _json(raw)
        media_id = answer.get("id") if isinstance(answer, dict) else None
        if status == 200 and isinstance(media_id, str) and media_id:
            return media_id
        raise send_error(status, answer, retry_after)

    async def _post_message(self, to: str, content: dict[str, Any]) -> str:
        """``POST /{phone_number_id}/messages`` of one message to ``to``; its wamid."""
        import aiohttp

        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
        try:
            status, raw, headers = await self._call(
                "POST", f"/{self.settings.phone_number_id}/messages", body | content
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"whatsapp: {type(exc).__name__}: {exc}") from None
        return send_outcome(status, raw, headers.get("Retry-After"))

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
