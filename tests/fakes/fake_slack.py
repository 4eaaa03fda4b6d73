"""A fake Slack: the Web API and the Socket Mode WebSocket, on loopback.

Speaks the real protocols, so ``slack_sdk`` drives it unmodified:

* Web API: ``POST /api/METHOD`` with a form or JSON body and ``Authorization: Bearer TOKEN``
  (or a ``token`` parameter); answers ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
  ``auth.test`` and ``chat.postMessage``/``reactions.*`` take the bot token (xoxb),
  ``apps.connections.open`` the app token (xapp) and returns the WebSocket URL.
* Socket Mode: ``hello`` on connect; each message is an ``events_api`` envelope that must be
  acknowledged with ``{"envelope_id": ...}``. Unacknowledged envelopes are delivered again
  (``retry_attempt`` + 1) after ``redeliver_after`` seconds and on every new connection.
* Files: ``url_private_download`` serves a file's bytes to the bot token only. The bot's own
  uploads take the external-upload flow: ``files.getUploadURLExternal`` (filename, length) gives
  an upload URL (no token: it is signed), the bytes are POSTed there, and
  ``files.completeUploadExternal`` shares the files in ``channel_id`` (and ``thread_ts``).
* Cards: ``blocks`` on ``chat.postMessage``/``chat.update`` are checked as Slack checks them
  (``invalid_blocks``: block types, section text of 1-3,000 characters, 1-25 buttons with a
  plain_text label of at most 75 characters, unique ``block_id``/``action_id`` of at most 255,
  ``value`` of at most 2,000). A button's tap is an ``interactive`` envelope carrying a
  ``block_actions`` payload (``push_tap``), acknowledged like any other but never delivered
  again; ``chat.update`` replaces a message's text and, when given, its blocks (``[]`` removes
  them); ``chat.postEphemeral`` is recorded in ``ephemerals``.

Tests play the user with ``post_user_message``, read what the bot said from ``posted``, and
inject trouble with ``fail_next``, ``drop`` and ``send_disconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import serve_on_loopback

TEAM_ID = "T0FAKE"
APP_ID = "A0FAKE"


@dataclass
class Failure:
    status: int = 200  # 429, 5xx; or 200 with ``error`` (channel_not_found, ...)
    error: str = ""
    retry_after: int | None = None


@dataclass
class Envelope:
    envelope_id: str
    event_id: str
    event: dict[str, Any]
    attempts: int = 0  # deliveries so far
    sent_at: float = 0.0  # monotonic time of the last delivery
    interactive: dict[str, Any] | None = None  # a block_actions payload instead of an event


MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BLOCK_ID = 255
MAX_VALUE = 2000
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


def blocks_problems(blocks: Any) -> list[str]:
    """What Slack would say is wrong with ``blocks`` (empty: nothing)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    if len(blocks) > MAX_BLOCKS:
        return [f"no more than {MAX_BLOCKS} blocks allowed"]
    problems: list[str] = []
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{index}]"
        if not isinstance(block, dict):
            problems.append(f"must be an object {where}")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= MAX_BLOCK_ID:
                problems.append(f"invalid block_id {where}")
            elif block_id in block_ids:
                problems.append(f"duplicate block_id {where}")
            else:
                block_ids.add(block_id)
        kind = block.get("type")
        if kind == "section":
            text = block.get("text")
            if not isinstance(text, dict) or text.get("type") not in TEXT_TYPES:
                problems.append(f"section needs a text object {where}/text")
            elif not isinstance(text.get("text"), str) or not (
                0 < len(text["text"]) <= MAX_SECTION_TEXT
            ):
                problems.append(f"must be between 1 and {MAX_SECTION_TEXT} characters {where}")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= MAX_ELEMENTS:
                problems.append(f"actions needs 1 to {MAX_ELEMENTS} elements {where}")
                continue
            for number, element in enumerate(elements):
                problems += _button_problems(element, action_ids, f"{where}/elements/{number}")
        elif kind not in ("divider", "context", "header"):
            problems.append(f"unsupported block type {kind!r} {where}")
    return problems


def _button_problems(element: Any, action_ids: set[str], where: str) -> list[str]:
    if not isinstance(element, dict) or element.get("type") != "button":
        return [f"only buttons are supported here {where}"]
    problems: list[str] = []
    text = element.get("text")
    label = text.get("text") if isinstance(text, dict) else None
    if not isinstance(text, dict) or text.get("type") != "plain_text":
        problems.append(f"a button's text must be plain_text {where}/text")
    elif not isinstance(label, str) or not 0 < len(label) <= MAX_BUTTON_TEXT:
        problems.append(f"must be between 1 and {MAX_BUTTON_TEXT} characters {where}/text")
    action_id = element.get("action_id")
    if not isinstance(action_id, str) or not 0 < len(action_id) <= MAX_BLOCK_ID:
        problems.append(f"invalid action_id {where}/action_id")
    elif action_id in action_ids:
        problems.append(f"duplicate action_id {where}/action_id")
    else:
        action_ids.add(action_id)
    value = element.get("value")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_VALUE):
        problems.append(f"must be at most {MAX_VALUE} characters {where}/value")
    if element.get("style") not in (None, "primary", "danger"):
        problems.append(f"style must be primary or danger {where}/style")
    return problems


@dataclass
class FakeSlack:
    bot_token: str = "xoxb-fake-bot-token"
    app_token: str = "xapp-fake-app-token"
    bot_user_id: str = "U0BOT"
    bot_id: str = "B0BOT"
    redeliver_after: float = 3.0  # seconds an envelope may go unacknowledged
    echo_own_messages: bool = True  # the bot's posts come back as events, as in Slack
    url: str = ""
    posted: list[dict[str, Any]] = field(default_factory=list)  # chat.postMessage, in order
    calls: list[str] = field(default_factory=list)  # every Web API method called
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # envelopes sent, retries too
    acks: list[str] = field(default_factory=list)  # envelope ids acknowledged, in order
    reactions: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    reaction_calls: list[tuple[str, str, str, str]] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)  # file ids served
    # the bot's messages by (channel, ts): text, blocks, thread_ts, as they are now
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)  # chat.update calls, in order
    ephemerals: list[dict[str, Any]] = field(default_factory=list)  # chat.postEphemeral
    uploads: list[dict[str, Any]] = field(default_factory=list)  # files shared by the bot
    timeline: list[str] = field(default_factory=list)  # "ack:ENVELOPE", "METHOD", in order
    _staged: dict[str, dict[str, Any]] = field(default_factory=dict)  # upload id -> its file
    connections: int = 0  # WebSocket connections opened so far
    swept_at: float = 0.0  # monotonic time the redelivery sweep last looked at every envelope
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    pending: dict[str, Envelope] = field(default_factory=dict)  # not yet acknowledged
    _files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> media type, data
    _tickets: set[str] = field(default_factory=set)
    _sockets: list[tuple[web.Request, web.WebSocketResponse]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    _redeliverer: asyncio.Task[None] | None = None

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1; returns the Web API base URL (``.../api/``)."""
        app = web.Application()
        app.router.add_post("/api/{method}", self._call)
        app.router.add_get("/api/{method}", self._call)
        app.router.add_get("/link/", self._socket)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        self._runner, base = await serve_on_loopback(app, port)
        self.url = f"{base}/api/"
        self._redeliverer = asyncio.create_task(self._redeliver_late())
        return self.url

    async def close(self) -> None:
        if self._redeliverer is not None:
            self._redeliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._redeliverer
        for _, ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the test's side: play the user ------------------------------------------------------

    async def post_user_message(
        self,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        channel_type: str = "im",
        user: str = "U0USER",
    ) -> str:
        """A user writes ``text`` in ``channel``; returns the message's ts."""
        ts = self._next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "channel_type": channel_type,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": TEAM_ID,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        if files:
            event["subtype"] = "file_share"
            event["files"] = files
        await self.push_event(event)
        return ts

    def add_file(self, name: str, data: bytes, mimetype: str = "text/plain") -> dict[str, Any]:
        """Upload a file as a user would; returns its object for ``post_user_message(files=)``."""
        file_id = f"F{next(self._ids):08d}"
        self._files[file_id] = (mimetype, data)
        base = self.url.removesuffix("/api/")
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rpartition(".")[2],
            "size": len(data),
            "url_private": f"{base}/files-pri/{file_id}/{name}",
            "url_private_download": f"{base}/files-pri/{file_id}/{name}",
        }

    async def post_bot_message(self, channel: str, text: str, bot_id: str = "B0OTHER") -> str:
        """Another app (or ours, with ``bot_id=self.bot_id``) writes in ``channel``."""
        ts = self._next_ts()
        event = {
            "type": "message",
            "subtype": "bot_message",
            "channel": channel,
            "channel_type": "channel",
            "bot_id": bot_id,
            "text": text,
            "ts": ts,
        }
        await self.push_event(event)
        return ts

    async def edit_message(self, channel: str, ts: str, text: str, user: str = "U0USER") -> None:
        edited = {"type": "message", "user": user, "text": text, "ts": ts}
        await self.push_event(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": channel,
                "channel_type": "im",
                "hidden": True,
                "message": {**edited, "edited": {"user": user, "ts": self._next_ts()}},
                "previous_message": {**edited, "text": "(before)"},
                "ts": self._next_ts(),
            }
        )

    async def delete_message(self, channel: str, ts: str) -> None:
        await self.push_event(
            {
                "type": "message",
                "subtype": "message_deleted",
                "channel": channel,
                "channel_type": "im",
                "hidden": True,
                "deleted_ts": ts,
                "ts": self._next_ts(),
            }
        )

    async def push_event(self, event: dict[str, Any]) -> Envelope:
        """Deliver any event as Slack would: in an envelope, until it is acknowledged."""
        envelope = Envelope(
            envelope_id=secrets.token_hex(16),
            event_id=f"Ev{next(self._ids):010d}",
            event=event,
        )
        self.pending[envelope.envelope_id] = envelope
        await self._deliver(envelope, retry_reason="")
        return envelope

    async def push_tap(
        self, channel: str, ts: str, action_id: str, user: str = "U0USER"
    ) -> Envelope:
        """``user`` presses the button ``action_id`` under the bot's message ``ts``: Slack sends
        a ``block_actions`` payload (only for a button the message really has)."""
        message = self.messages[(channel, ts)]
        found = [
            (block, element)
            for block in message.get("blocks") or []
            if block.get("type") == "actions"
            for element in block["elements"]
            if element.get("action_id") == action_id
        ]
        if not found:
            raise AssertionError(f"the message {ts} has no button {action_id!r}")
        block, element = found[0]
        shown = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id, **message}
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "verification-token",
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": f"{next(self._ids)}.{secrets.token_hex(8)}",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "directmessage"},
            "message": shown,
            "state": {"values": {}},
            "response_url": f"{self.url}response/{secrets.token_hex(8)}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block.get("block_id") or secrets.token_hex(3),
                    "text": element["text"],
                    "value": element.get("value"),
                    "type": "button",
                    "action_ts": self._next_ts(),
                }
            ],
        }
        return await self.push_interactive(payload)

    async def push_interactive(self, payload: dict[str, Any]) -> Envelope:
        """Deliver any interactive payload (hostile ones too) in an ``interactive`` envelope."""
        envelope = Envelope(
            envelope_id=secrets.token_hex(16), event_id="", event={}, interactive=payload
        )
        self.pending[envelope.envelope_id] = envelope
        await self._deliver(envelope, retry_reason="")
        return envelope

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """The bot's message ``ts`` as it is now (after any chat.update)."""
        return self.messages[(channel, ts)]

    async def send_raw(self, text: str) -> None:
        """Send anything (hostile or malformed) on the current connection."""
        ws = self._current()
        if ws is not None:
            await ws.send_str(text)

    async def drop(self) -> None:
        """Cut the current connection without a close frame (a network failure)."""
        if self._sockets:
            request, _ = self._sockets.pop()
            if request.transport is not None:
                request.transport.abort()

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's own warning that it will close this connection: the client reconnects."""
        await self.send_raw(
            json.dumps(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
            )
        )

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int | None = 1,
        times: int = 1,
        error: str = "",
    ) -> None:
        """The next ``times`` calls of ``method`` fail: 429 (with ``Retry-After``), a 5xx, or
        (``status=200, error="channel_not_found"``) a Slack error."""
        if status == 429 and not error:
            error = "ratelimited"
        failure = Failure(status, error, retry_after if status == 429 else None)
        self.failures.setdefault(method, []).extend([failure] * times)

    def texts_to(self, channel: str) -> list[str]:
        return [m["text"] for m in self.posted if m["channel"] == channel]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    async def wait_for_posted(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.posted) >= count, timeout)
        return self.posted

    async def wait_for_connections(self, count: int, timeout: float = 30.0) -> None:
        await self.wait_for(lambda: self.connections >= count, timeout)

    def acked(self, ts: str) -> bool:
        """Whether the envelope of the message ``ts`` was acknowledged."""
        return any(
            d["payload"].get("event", {}).get("ts") == ts and d["envelope_id"] in self.acks
            for d in self.deliveries
        )

    # -- the Socket Mode side ---------------------------------------------------------------

    def _current(self) -> web.WebSocketResponse | None:
        live = [ws for _, ws in self._sockets if not ws.closed]
        return live[-1] if live else None

    async def _deliver(self, envelope: Envelope, retry_reason: str) -> None:
        ws = self._current()
        if ws is None:
            return  # sent on the next connection
        frame: dict[str, Any]
        if envelope.interactive is not None:
            frame = {
                "envelope_id": envelope.envelope_id,
                "payload": envelope.interactive,
                "type": "interactive",
                "accepts_response_payload": False,
            }
        else:
            frame = self._events_api_frame(envelope, retry_reason)
        envelope.attempts += 1
        envelope.sent_at = time.monotonic()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps(frame))
            async with self._changed:
                self.deliveries.append(frame)
                self._changed.notify_all()

    def _events_api_frame(self, envelope: Envelope, retry_reason: str) -> dict[str, Any]:
        return {
            "envelope_id": envelope.envelope_id,
            "payload": {
                "token": "verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": envelope.event,
                "type": "event_callback",
                "event_id": envelope.event_id,
                "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM_ID, "user_id": self.bot_user_id}],
            },
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": envelope.attempts,
            "retry_reason": retry_reason,
        }

    async def _redeliver_late(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for envelope in list(self.pending.values()):
                if envelope.interactive is not None:
                    continue  # Slack never repeats a tap: the user sees an error instead
                if envelope.attempts and now - envelope.sent_at >= self.redeliver_after:
                    await self._deliver(envelope, retry_reason="timeout")
            async with self._changed:
                self.swept_at = now
                self._changed.notify_all()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            raise web.HTTPUnauthorized(text="invalid ticket")
        self._tickets.discard(ticket)  # each URL is good for one connection
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append((request, ws))
        async with self._changed:
            self.connections += 1
            self._changed.notify_all()
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        await ws.send_str(json.dumps(hello))
        for envelope in list(self.pending.values()):  # what the last connection left unacked
            if envelope.interactive is not None and envelope.attempts:
                continue
            await self._deliver(envelope, retry_reason="" if not envelope.attempts else "retry")
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                envelope_id = json.loads(message.data).get("envelope_id")
                if isinstance(envelope_id, str):
                    async with self._changed:
                        self.acks.append(envelope_id)
                        self.timeline.append(f"ack:{envelope_id}")
                        self.pending.pop(envelope_id, None)
                        self._changed.notify_all()
        with contextlib.suppress(ValueError):
            self._sockets.remove((request, ws))
        return ws

    # -- the Web API side ---------------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(params.get("token", ""))
        self.calls.append(method)
        self.timeline.append(method)
        if not token:
            return _error("not_authed")
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != wanted:
            if method == "apps.connections.open" and token == self.bot_token:
                return _error("not_allowed_token_type")
            return _error("invalid_auth")
        pending = self.failures.get(method)
        if pending:
            failure = pending.pop(0)
            if failure.status == 429:
                headers = {"Retry-After": str(failure.retry_after or 1)}
                return web.json_response(
                    {"ok": False, "error": failure.error}, status=429, headers=headers
                )
            if failure.status >= 500:
                return web.Response(
                    status=failure.status,
                    text="<html>Server error</html>",
                    content_type="text/html",
                )
            return _error(failure.error)
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }.get(method)
        if handler is None:
            return _error("unknown_method")
        return await handler(request, params)

    async def _auth_test(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        return _ok(
            url="https://fake.slack.com/",
            team="Fake",
            user="clawpen",
            team_id=TEAM_ID,
            user_id=self.bot_user_id,
            bot_id=self.bot_id,
            is_enterprise_install=False,
        )

    async def _connections_open(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        host = request.host
        return _ok(url=f"ws://{host}/link/?ticket={ticket}&app_id={APP_ID}")

    async def _post_message(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        channel = str(params.get("channel", ""))
        text = str(params.get("text", ""))
        if not channel:
            return _error("channel_not_found")
        if not text:
            return _error("no_text")
        if len(text) > 40000:
            return _error("msg_too_long")
        blocks = _json_param(params.get("blocks"))
        if blocks is not None and (problems := blocks_problems(blocks)):
            return _invalid_blocks(problems)
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "text": text,
            "ts": ts,
        }
        thread_ts = params.get("thread_ts")
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
        if blocks:
            message["blocks"] = blocks
        async with self._changed:
            self.posted.append({"channel": channel, "text": text, "thread_ts": thread_ts, "ts": ts})
            self.messages[(channel, ts)] = {
                key: value for key, value in message.items() if key not in ("user", "bot_id")
            }
            self._changed.notify_all()
        if self.echo_own_messages:
            await self.push_event(
                {**message, "subtype": "bot_message", "channel": channel, "channel_type": "im"}
            )
        return _ok(channel=channel, ts=ts, message=message)

    async def _update(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        """chat.update: the text, and the blocks when given (``[]`` removes them; left out,
        the message keeps them, as Slack documents)."""
        channel, ts = str(params.get("channel", "")), str(params.get("ts", ""))
        if not channel:
            return _error("channel_not_found")
        message = self.messages.get((channel, ts))
        if message is None:
            return _error("message_not_found")
        text = str(params.get("text", ""))
        blocks = _json_param(params.get("blocks"))
        if blocks is not None and (problems := blocks_problems(blocks)):
            return _invalid_blocks(problems)
        if not text and not blocks:
            return _error("no_text")
        async with self._changed:
            message["text"] = text
            if blocks is not None:
                if blocks:
                    message["blocks"] = blocks
                else:
                    message.pop("blocks", None)
            self.updates.append({"channel": channel, "ts": ts, "text": text, "blocks": blocks})
            self._changed.notify_all()
        return _ok(channel=channel, ts=ts, text=text)

    async def _post_ephemeral(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        channel, user = str(params.get("channel", "")), str(params.get("user", ""))
        text = str(params.get("text", ""))
        if not channel:
            return _error("channel_not_found")
        if not user:
            return _error("user_not_in_channel")
        if not text:
            return _error("no_text")
        async with self._changed:
            self.ephemerals.append(
                {
                    "channel": channel,
                    "user": user,
                    "text": text,
                    "thread_ts": params.get("thread_ts"),
                }
            )
            self._changed.notify_all()
        return _ok(message_ts=self._next_ts())

    async def _upload_url(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        filename = str(params.get("filename") or "")
        try:
            length = int(params.get("length") or 0)
        except ValueError:
            length = 0
        if not filename or length <= 0:
            return _error("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self._staged[file_id] = {"name": filename, "length": length, "data": None}
        base = self.url.removesuffix("/api/")
        return _ok(upload_url=f"{base}/upload/v1/{file_id}", file_id=file_id)

    async def _upload(self, request: web.Request) -> web.Response:
        """The signed upload URL: no token, the bytes as the body (or a multipart ``file``)."""
        staged = self._staged.get(request.match_info["file_id"])
        if staged is None:
            return web.Response(status=404, text="not found", content_type="text/plain")
        pending = self.failures.get("upload")
        if pending:
            failure = pending.pop(0)
            return web.Response(status=failure.status, text="error", content_type="text/plain")
        if request.content_type.startswith("multipart/"):
            data = b""
            async for part in await request.multipart():
                if getattr(part, "name", "") == "file":
                    data = await part.read()  # type: ignore[union-attr]
        else:
            data = await request.read()
        staged["data"] = data
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _complete_upload(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        files = _json_param(params.get("files"))
        if not isinstance(files, list) or not files:
            return _error("invalid_arguments")
        channel = params.get("channel_id")
        thread_ts = params.get("thread_ts")
        if thread_ts and not channel:
            return _error("invalid_arguments")
        done: list[dict[str, Any]] = []
        for entry in files:
            file_id = entry.get("id") if isinstance(entry, dict) else None
            staged = self._staged.get(str(file_id))
            if staged is None or staged["data"] is None:
                return _error("file_not_found")
            done.append({"id": file_id, "name": staged["name"], "title": entry.get("title")})
        async with self._changed:
            for entry in done:
                staged = self._staged.pop(entry["id"])
                self.uploads.append(
                    {
                        "id": entry["id"],
                        "name": staged["name"],
                        "title": entry["title"],
                        "data": staged["data"],
                        "length": staged["length"],
                        "channel": channel,
                        "thread_ts": thread_ts,
                        "initial_comment": params.get("initial_comment"),
                    }
                )
            self._changed.notify_all()
        return _ok(files=done)

    async def _reactions_add(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        key = (str(params.get("channel", "")), str(params.get("timestamp", "")))
        name = str(params.get("name", ""))
        self.reaction_calls.append(("add", *key, name))
        names = self.reactions.setdefault(key, set())
        if name in names:
            return _error("already_reacted")
        async with self._changed:
            names.add(name)
            self._changed.notify_all()
        return _ok()

    async def _reactions_remove(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        key = (str(params.get("channel", "")), str(params.get("timestamp", "")))
        name = str(params.get("name", ""))
        self.reaction_calls.append(("remove", *key, name))
        names = self.reactions.get(key, set())
        if name not in names:
            return _error("no_reaction")
        async with self._changed:
            names.discard(name)
            self._changed.notify_all()
        return _ok()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token != self.bot_token:
            # Slack answers a login page, not the file, to a request without the token
            return web.Response(status=302, headers={"Location": "https://fake.slack.com/"})
        found = self._files.get(request.match_info["file_id"])
        if found is None:
            raise web.HTTPNotFound()
        self.downloads.append(request.match_info["file_id"])
        mimetype, data = found
        return web.Response(body=data, content_type=mimetype)

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ids):06d}"


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.method == "POST":
        for key, value in (await request.post()).items():
            params[key] = value if isinstance(value, str) else ""
    return params


def _json_param(value: Any) -> Any:
    """A parameter Slack takes as JSON: an array in a JSON body, a string in a form."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _invalid_blocks(problems: list[str]) -> web.Response:
    return web.json_response(
        {
            "ok": False,
            "error": "invalid_blocks",
            "errors": problems,
            "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
        }
    )


def _ok(**result: Any) -> web.Response:
    return web.json_response({"ok": True, **result})


def _error(error: str) -> web.Response:
    """Slack reports API errors with HTTP 200 and ``ok: false``."""
    return web.json_response({"ok": False, "error": error})
