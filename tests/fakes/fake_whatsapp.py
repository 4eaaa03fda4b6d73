"""A fake WhatsApp Cloud API: the Graph API the adapter calls, and Meta pushing webhooks to it.

Graph side (on loopback, Bearer token checked, 401 with error 190 otherwise):
``GET /{phone_number_id}``, ``POST /{phone_number_id}/messages`` (texts, cards and media
messages are recorded in ``sent``, each checked against the Cloud API's limits as Meta checks
them: an interactive message's at most 3 reply buttons, titles of at most 20 characters and
unique, ids of at most 256, a body of at most 1024; a media message's uploaded id;
``status: read`` calls in ``reads``), ``POST /{phone_number_id}/media`` (a multipart upload,
recorded in ``uploads``; an image over 5 MB or a type WhatsApp does not take is refused),
``GET /{media_id}`` (``url``, ``mime_type``, ``file_size``) and the download at that ``url``.
``fail_next`` injects 429s and 5xxs, ``close_window`` makes sends to a user fail with error
131047 as Meta does once 24 hours have passed.

Meta side: ``user_says``, ``user_sends_image``, ``user_taps`` (a card's reply button),
``status`` build Meta's payload, sign it as Meta does (``X-Hub-Signature-256: sha256=`` +
HMAC-SHA256 of the raw body under the app secret) and POST it to ``webhook_url`` in the
background, again and again until it is answered 200, as Meta does. ``deliveries``
records every attempt; ``post`` sends anything (forged, unsigned) once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from . import serve_on_loopback

WINDOW_CLOSED_ERROR = {
    "message": "(#131047) Re-engagement message",
    "type": "OAuthException",
    "code": 131047,
    "error_data": {
        "messaging_product": "whatsapp",
        "details": "Message failed to send because more than 24 hours have passed since the"
        " customer last replied to this number.",
    },
    "fbtrace_id": "AbCdEf",
}


@dataclass
class Failure:
    status: int
    code: int | None = None
    retry_after: int | None = None


@dataclass
class Upload:
    media_type: str  # the ``type`` field
    name: str  # the file part's filename
    content_type: str  # the file part's Content-Type
    data: bytes


# what the Cloud API takes, by message type, and how large (Meta's "Supported media types")
MB = 1024 * 1024
MEDIA_LIMITS = {
    "image/jpeg": 5 * MB,
    "image/png": 5 * MB,
    "application/pdf": 100 * MB,
    "text/plain": 100 * MB,
    "application/msword": 100 * MB,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": 100 * MB,
    "application/vnd.ms-excel": 100 * MB,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": 100 * MB,
    "application/vnd.ms-powerpoint": 100 * MB,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 * MB,
    "image/webp": 500 * 1024,  # a sticker
    "audio/ogg": 16 * MB,
    "audio/mpeg": 16 * MB,
    "video/mp4": 16 * MB,
}


@dataclass
class Delivery:
    key: str  # the wamid it carries (or a status's "status:wamid")
    attempt: int
    status: int  # the adapter's answer; 0 when it could not be reached


@dataclass
class FakeWhatsApp:
    phone_number_id: str = "106540352242922"
    access_token: str = field(default_factory=lambda: "EAAG" + secrets.token_hex(16))
    app_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    verify_token: str = field(default_factory=lambda: secrets.token_hex(8))
    webhook_url: str = ""  # where Meta posts: the adapter's listen address + /webhooks/whatsapp
    redelivery_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)  # then the last, repeatedly
    max_attempts: int = 60
    url: str = ""
    sent: list[dict[str, Any]] = field(default_factory=list)  # text messages, as posted
    reads: list[dict[str, Any]] = field(default_factory=list)  # mark-read / typing calls
    send_attempts: int = 0  # POST /messages calls that tried to send a text
    media: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (mime, data)
    uploads: dict[str, Upload] = field(default_factory=dict)  # media id -> what was uploaded
    media_downloads: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    closed_windows: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    _bodies: dict[str, bytes] = field(default_factory=dict)  # wamid -> the webhook carrying it
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=110 * MB)
        app.router.add_get("/download/{media_id}", self._download)
        app.router.add_get("/{object_id}", self._get_object)
        app.router.add_post("/{phone_number_id}/messages", self._messages)
        app.router.add_post("/{phone_number_id}/media", self._upload)
        self._runner, self.url = await serve_on_loopback(app, port)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self.url

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def settings(self, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        """The ``channels.whatsapp`` block for an adapter on this fake."""
        return {
            "phone_number_id": self.phone_number_id,
            "access_token": self.access_token,
            "app_secret": self.app_secret,
            "verify_token": self.verify_token,
            "api_base_url": self.url,
            "listen": listen,
        }

    # -- the test's side: play the user, through Meta ------------------------------------------

    def user_says(self, wa_id: str, text: str, reply_to: str = "") -> str:
        """The user writes ``text``; Meta delivers it (in the background). Returns its wamid."""
        return self._user_message(wa_id, "text", {"body": text}, reply_to)

    def user_sends_image(
        self, wa_id: str, data: bytes, mime_type: str = "image/png", caption: str | None = None
    ) -> str:
        media_id = self.add_media(data, mime_type)
        image: dict[str, Any] = {
            "mime_type": mime_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            "id": media_id,
        }
        if caption is not None:
            image["caption"] = caption
        return self._user_message(wa_id, "image", image)

    def user_sends(self, wa_id: str, kind: str, content: dict[str, Any]) -> str:
        """Any message type (``document``, ``audio``, ``reaction``, ...) with its content."""
        return self._user_message(wa_id, kind, content)

    def add_media(self, data: bytes, mime_type: str) -> str:
        media_id = str(10**15 + next(self._ids))
        self.media[media_id] = (mime_type, data)
        return media_id

    def status(self, wa_id: str, wamid: str, status: str, error_code: int | None = None) -> str:
        """Meta reports on a message we sent (sent, delivered, read, failed)."""
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": wa_id,
        }
        if error_code is not None:
            title = "Re-engagement message" if error_code == 131047 else "Failed"
            entry["errors"] = [{"code": error_code, "title": title, "message": title}]
        key = f"{status}:{wamid}"
        self.deliver(self.payload({"statuses": [entry]}), key)
        return key

    def payload(self, value: dict[str, Any], with_contact: str | None = None) -> dict[str, Any]:
        """Meta's envelope around one change's ``value``."""
        inner: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": "15550001111",
                "phone_number_id": self.phone_number_id,
            },
        }
        if with_contact is not None:
            inner["contacts"] = [
                {"profile": {"name": f"user {with_contact}"}, "wa_id": with_contact}
            ]
        inner.update(value)
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": "102290129340398", "changes": [{"value": inner, "field": "messages"}]}
            ],
        }

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()

    def deliver(self, payload: dict[str, Any], key: str) -> None:
        """POST ``payload`` signed, in the background, until it is answered 200."""
        body = json.dumps(payload).encode()
        task = asyncio.get_running_loop().create_task(self._deliver(body, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def redeliver(self, wamid: str) -> None:
        """Meta sends a message again although it was answered 200 (it does, now and then)."""
        body = self._bodies[wamid]
        task = asyncio.get_running_loop().create_task(self._deliver(body, wamid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None, method: str = "POST"
    ) -> tuple[int, str]:
        """One request to the webhook, exactly as given (forged, unsigned, malformed)."""
        assert self._http is not None and self.webhook_url
        async with self._http.request(
            method, self.webhook_url, data=body, headers=headers or {}
        ) as response:
            return response.status, await response.text()

    async def handshake(self, verify_token: str, challenge: str = "1158201444") -> tuple[int, str]:
        """Meta's subscription check, as the dashboard makes it."""
        assert self._http is not None and self.webhook_url
        query = {"hub.mode": "subscribe", "hub.verify_token": verify_token}
        query["hub.challenge"] = challenge
        async with self._http.get(self.webhook_url, params=query) as response:
            return response.status, await response.text()

    def fail_next(
        self, status: int, times: int = 1, code: int | None = None, retry_after: int | None = None
    ) -> None:
        """The next ``times`` sends fail with ``status`` (and Graph error ``code``)."""
        self.failures.extend([Failure(status, code, retry_after)] * times)

    def close_window(self, wa_id: str) -> None:
        """24 hours have passed since ``wa_id`` wrote: sends to them fail with 131047."""
        self.closed_windows.add(wa_id)

    def texts_to(self, wa_id: str) -> list[str]:
        return [m["text"]["body"] for m in self.sent if m["to"] == wa_id and m["type"] == "text"]

    def user_taps(self, wa_id: str, card: str, data: str, title: str = "Allow") -> str:
        """The user presses the reply button ``data`` under the card ``card`` (its wamid); Meta
        delivers the ``button_reply``. Returns the tap's wamid."""
        reply = {"type": "button_reply", "button_reply": {"id": data, "title": title}}
        return self._user_message(wa_id, "interactive", reply, reply_to=card)

    def tap_body(self, wa_id: str, card: str, data: str, wamid: str = "wamid.tap") -> bytes:
        """A ``button_reply`` webhook's body, to be posted by hand (forged, unsigned)."""
        message = {
            "from": wa_id,
            "id": wamid,
            "timestamp": str(int(time.time())),
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": data, "title": "x"}},
            "context": {"from": "15550001111", "id": card},
        }
        return json.dumps(self.payload({"messages": [message]}, with_contact=wa_id)).encode()

    def attempts_for(self, key: str) -> list[int]:
        """The adapter's answers to each delivery of ``key``, in order."""
        return [d.status for d in self.deliveries if d.key == key]

    async def wait_for_sent(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        await self._wait(lambda: len(self.sent) >= count, timeout)
        return self.sent

    async def wait_for_delivery(self, key: str, timeout: float = 30.0) -> list[int]:
        """Until ``key`` was answered 200; returns every answer it got."""
        await self._wait(lambda: 200 in self.attempts_for(key), timeout)
        return self.attempts_for(key)

    async def wait_for_attempts(self, key: str, count: int, timeout: float = 30.0) -> list[int]:
        await self._wait(lambda: len(self.attempts_for(key)) >= count, timeout)
        return self.attempts_for(key)

    async def wait_for_send_attempts(self, count: int, timeout: float = 30.0) -> int:
        await self._wait(lambda: self.send_attempts >= count, timeout)
        return self.send_attempts

    async def _wait(self, ready: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- Meta's side --------------------------------------------------------------------------

    def _user_message(
        self, wa_id: str, kind: str, content: dict[str, Any], reply_to: str = ""
    ) -> str:
        wamid = "wamid.HBgL" + secrets.token_hex(12).upper()
        message: dict[str, Any] = {
            "from": wa_id,
            "id": wamid,
            "timestamp": str(int(time.time())),
            "type": kind,
            kind: content,
        }
        if reply_to:
            message["context"] = {"from": "15550001111", "id": reply_to}
        payload = self.payload({"messages": [message]}, with_contact=wa_id)
        self._bodies[wamid] = json.dumps(payload).encode()
        self.redeliver(wamid)
        return wamid

    async def _deliver(self, body: bytes, key: str) -> None:
        assert self._http is not None
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.sign(body)}
        for attempt in range(1, self.max_attempts + 1):
            status = 0
            if self.webhook_url:
                try:
                    async with self._http.post(self.webhook_url, data=body, headers=headers) as r:
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
            self.deliveries.append(Delivery(key, attempt, status))
            await self._notify()
            if status == 200:
                return
            delays = self.redelivery_delays
            await asyncio.sleep(delays[min(attempt - 1, len(delays) - 1)])

    # -- the Graph API ------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.access_token}"

    async def _get_object(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _token_refused()
        object_id = request.match_info["object_id"]
        if object_id == self.phone_number_id:
            return web.json_response(
                {
                    "verified_name": "clawpen test",
                    "display_phone_number": "+1 555-000-1111",
                    "quality_rating": "GREEN",
                    "id": object_id,
                }
            )
        if object_id in self.media:
            mime, data = self.media[object_id]
            return web.json_response(
                {
                    "messaging_product": "whatsapp",
                    "url": f"{self.url}/download/{object_id}",
                    "mime_type": mime,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "file_size": len(data),
                    "id": object_id,
                }
            )
        return _graph_error(
            400,
            {
                "message": f"Unsupported get request. Object with ID '{object_id[:40]}' does not"
                " exist",
                "type": "GraphMethodException",
                "code": 100,
                "error_subcode": 33,
            },
        )

    async def _download(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _token_refused()
        media_id = request.match_info["media_id"]
        if media_id not in self.media:
            return web.Response(status=404)
        self.media_downloads.append(media_id)
        mime, data = self.media[media_id]
        return web.Response(body=data, content_type=mime)

    async def _messages(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _token_refused()
        if request.match_info["phone_number_id"] != self.phone_number_id:
            return _graph_error(400, {"message": "Invalid parameter", "code": 100})
        try:
            body = await request.json()
        except ValueError:
            return _graph_error(400, {"message": "Invalid JSON", "code": 100})
        if body.get("status") == "read":
            self.reads.append(body)
            await self._notify()
            return web.json_response({"success": True})
        self.send_attempts += 1
        await self._notify()
        if self.failures:
            failure = self.failures.pop(0)
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            code = failure.code or (130429 if failure.status == 429 else 131000)
            error = {
                "message": "Rate limit hit" if failure.status == 429 else "Something went wrong"
            }
            return _graph_error(failure.status, error | {"code": code}, headers)
        to = str(body.get("to", ""))
        problem = self._invalid(body)
        if problem:
            return _graph_error(400, {"message": f"(#100) {problem}", "code": 100})
        if to in self.closed_windows:
            return _graph_error(400, WINDOW_CLOSED_ERROR)
        wamid = "wamid.HBgL" + secrets.token_hex(12).upper()
        self.sent.append(body | {"id": wamid})
        await self._notify()
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )

    def _invalid(self, body: dict[str, Any]) -> str:
        """What Meta would refuse in a message's body ("" when nothing)."""
        kind = body.get("type")
        content = body.get(kind) if isinstance(kind, str) else None
        if not isinstance(content, dict):
            return f"Param {kind} is required"
        if kind == "text":
            text = content.get("body")
            if not isinstance(text, str) or not text:
                return "Param text['body'] is required"
            return "Param text['body'] is too long" if len(text) > 4096 else ""
        if kind == "interactive":
            return _invalid_buttons(content)
        if kind in ("image", "document"):
            upload = self.uploads.get(str(content.get("id")))
            if upload is None:
                return f"Param {kind}['id'] is not a valid media id"
            photo = upload.media_type in ("image/jpeg", "image/png")
            if kind == "image" and not photo:
                return f"{upload.media_type} is not an image type WhatsApp takes"
            if len(str(content.get("caption", ""))) > 1024:
                return f"Param {kind}['caption'] is too long"
            if kind == "document" and not content.get("filename"):
                return ""  # allowed; WhatsApp then shows "Untitled"
            return ""
        return f"Param type {kind!r} is not supported by this fake"

    async def _upload(self, request: web.Request) -> web.Response:
        """``POST /{phone_number_id}/media``: multipart ``messaging_product``, ``type``,
        ``file``."""
        if not self._authorized(request):
            return _token_refused()
        if request.match_info["phone_number_id"] != self.phone_number_id:
            return _graph_error(400, {"message": "Invalid parameter", "code": 100})
        fields: dict[str, str] = {}
        file: tuple[str, str, bytes] | None = None
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            return _graph_error(400, {"message": "(#100) not multipart", "code": 100})
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            if part.name == "file":
                data = await part.read()
                file = (part.filename or "", part.headers.get("Content-Type", ""), bytes(data))
            elif part.name:
                fields[part.name] = await part.text()
        if fields.get("messaging_product") != "whatsapp":
            return _graph_error(
                400, {"message": "(#100) The parameter messaging_product is required.", "code": 100}
            )
        if file is None:
            return _graph_error(
                400, {"message": "(#100) The parameter file is required.", "code": 100}
            )
        name, content_type, data = file
        media_type = fields.get("type", "")
        limit = MEDIA_LIMITS.get(media_type)
        if limit is None or content_type != media_type:
            return _graph_error(
                400,
                {
                    "message": f"(#131053) Media upload error: {media_type!r} is not supported",
                    "code": 131053,
                },
            )
        if len(data) > limit:
            return _graph_error(
                400,
                {"message": f"(#131053) Media upload error: over {limit} bytes", "code": 131053},
            )
        media_id = str(2 * 10**15 + next(self._ids))
        self.uploads[media_id] = Upload(media_type, name, content_type, data)
        await self._notify()
        return web.json_response({"id": media_id})


def _invalid_buttons(content: dict[str, Any]) -> str:
    """What Meta refuses in an ``interactive`` message of type ``button``."""
    if content.get("type") != "button":
        return "Param interactive['type'] must be button in this fake"
    body = content.get("body")
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        return "Param interactive['body']['text'] is required"
    if len(text) > 1024:
        return "Param interactive['body']['text'] is too long (1024 characters at most)"
    action = content.get("action")
    buttons = action.get("buttons") if isinstance(action, dict) else None
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        return "Param interactive['action']['buttons'] must hold 1 to 3 buttons"
    ids: set[str] = set()
    titles: set[str] = set()
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) else None
        if (
            not isinstance(button, dict)
            or button.get("type") != "reply"
            or not isinstance(reply, dict)
        ):
            return "Param interactive['action']['buttons'][] must be a reply button"
        button_id, title = reply.get("id"), reply.get("title")
        if not isinstance(button_id, str) or not 1 <= len(button_id) <= 256:
            return "Param reply['id'] must be 1 to 256 characters"
        if not isinstance(title, str) or not 1 <= len(title) <= 20:
            return "Param reply['title'] must be 1 to 20 characters"
        if button_id in ids or title in titles:
            return "Buttons' ids and titles must be unique"
        ids.add(button_id)
        titles.add(title)
    return ""


def _graph_error(
    status: int, error: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"type": "OAuthException", "fbtrace_id": "AbCdEf"} | error}
    return web.json_response(body, status=status, headers=headers)


def _token_refused() -> web.Response:
    return _graph_error(
        401,
        {
            "message": "Error validating access token: Session has expired",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
        },
    )
