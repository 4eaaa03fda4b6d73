"""A fake Slack: the Web API and the Socket Mode WebSocket, on loopback.

Speaks the real protocols, so ``slack_sdk`` drives it unmodified:

* Web API: ``POST /api/METHOD`` with a form or JSON body and ``Authorization: Bearer TOKEN``
  (or a ``token`` parameter); answers ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
  ``auth.test`` and ``chat.postMessage``/``reactions.*`` take the bot token (xoxb),
  ``apps.connections.open`` the app token (xapp) and returns the WebSocket URL.
* Socket Mode: ``hello`` on connect; each message is an ``events_api`` envelope that must be
  acknowledged with ``{"envelope_id": ...}``. Unacknowledged envelopes are delivered again
  (``retry_attempt`` + 1) after ``redeliver_after`` seconds and on every new connection.
* Files: ``url_private_download`` serves a file's bytes to the bot token only.

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
            d["payload"]["event"].get("ts") == ts and d["envelope_id"] in self.acks
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
        frame = {
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
        envelope.attempts += 1
        envelope.sent_at = time.monotonic()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps(frame))
            async with self._changed:
                self.deliveries.append(frame)
                self._changed.notify_all()

    async def _redeliver_late(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for envelope in list(self.pending.values()):
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
            await self._deliver(envelope, retry_reason="" if not envelope.attempts else "retry")
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                envelope_id = json.loads(message.data).get("envelope_id")
                if isinstance(envelope_id, str):
                    async with self._changed:
                        self.acks.append(envelope_id)
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
        async with self._changed:
            self.posted.append({"channel": channel, "text": text, "thread_ts": thread_ts, "ts": ts})
            self._changed.notify_all()
        if self.echo_own_messages:
            await self.push_event(
                {**message, "subtype": "bot_message", "channel": channel, "channel_type": "im"}
            )
        return _ok(channel=channel, ts=ts, message=message)

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


def _ok(**result: Any) -> web.Response:
    return web.json_response({"ok": True, **result})


def _error(error: str) -> web.Response:
    """Slack reports API errors with HTTP 200 and ``ok: false``."""
    return web.json_response({"ok": False, "error": error})
