"""A fake Discord: REST v10 and the gateway WebSocket, on loopback.

Speaks what discord.py speaks to the real one: ``Authorization: Bot TOKEN`` on ``/api/v10``
(401 for any other token), rate-limit headers on every answer, 429s with a JSON ``retry_after``
(plus ``Retry-After`` and ``Via``, without which discord.py takes a 429 for a Cloudflare ban);
and a gateway with HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, numbered dispatches,
RESUME (replaying what the client missed, then RESUMED) and INVALID_SESSION, in JSON, plain or
``zlib-stream`` as the client asks. The bot's own posts come back as MESSAGE_CREATE, as on
Discord.

Cards and files: a message's ``components`` are checked as Discord checks them (at most 5 action
rows of 1-5 buttons, a ``custom_id`` of 1-100 characters unique in the message, a label of at
most 80), else 400 with code 50035; a file comes as ``multipart/form-data`` (``payload_json``
and ``files[n]``), at most 10 MB (else 413, code 40005), and shows as an attachment whose type
Discord guesses from its name. ``push_tap`` is a user pressing a button: an ``INTERACTION_CREATE``
of type 3 on the gateway, to be answered once (``POST /interactions/{id}/{token}/callback``)
within 3 seconds (else 404, code 10062 Unknown interaction; twice: 400, code 40060); after it,
follow-ups on ``POST /webhooks/{application}/{token}``. ``PATCH`` edits a message (only the
bot's own), and Discord echoes an edit as MESSAGE_UPDATE.

Tests play the users with ``post_user_message``, read what the bot said from ``sent``, and
break things with ``fail_next``, ``drop_connection`` and ``invalidate_sessions``.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from . import serve_on_loopback

API = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT_INTENT  # members, presences, content

SEND_MESSAGE = "POST /channels/{channel_id}/messages"  # route names for fail_next
EDIT_MESSAGE = "PATCH /channels/{channel_id}/messages/{message_id}"
TYPING = "POST /channels/{channel_id}/typing"
CALLBACK = "POST /interactions/{interaction_id}/{interaction_token}/callback"
FOLLOW_UP = "POST /webhooks/{application_id}/{interaction_token}"
MAX_UPLOAD = 10 * 1024 * 1024  # a bot's upload, per message
INTERACTION_DEADLINE = 3.0  # seconds to answer an interaction
MAX_ROWS, MAX_ROW_BUTTONS, MAX_CUSTOM_ID, MAX_LABEL = 5, 5, 100, 80


def components_problems(components: Any) -> list[str]:
    """What Discord would say is wrong with a message's ``components`` (empty: nothing)."""
    if not isinstance(components, list) or len(components) > MAX_ROWS:
        return [f"components: Must be {MAX_ROWS} or fewer in length."]
    problems: list[str] = []
    custom_ids: set[str] = set()
    for r, row in enumerate(components):
        children = row.get("components") if isinstance(row, dict) else None
        if not isinstance(row, dict) or row.get("type") != 1 or not isinstance(children, list):
            problems.append(f"components.{r}: an action row (type 1) is required")
            continue
        if not 0 < len(children) <= MAX_ROW_BUTTONS:
            problems.append(f"components.{r}.components: Must be 1 to {MAX_ROW_BUTTONS} long.")
        for c, button in enumerate(children):
            where = f"components.{r}.components.{c}"
            if not isinstance(button, dict) or button.get("type") != 2:
                problems.append(f"{where}: only buttons (type 2) are expected here")
                continue
            label = button.get("label")
            if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
                problems.append(f"{where}.label: Must be {MAX_LABEL} or fewer in length.")
            if button.get("style") not in (1, 2, 3, 4, 5, 6):
                problems.append(f"{where}.style: Value must be one of (1, 2, 3, 4, 5, 6).")
            if button.get("style") == 5:
                continue  # a link button has a url, no custom_id
            custom_id = button.get("custom_id")
            if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
                problems.append(f"{where}.custom_id: Must be 1 to {MAX_CUSTOM_ID} long.")
            elif custom_id in custom_ids:
                problems.append(f"{where}.custom_id: Component custom id cannot be duplicated")
            else:
                custom_ids.add(custom_id)
    return problems


_clock = {"last": 0}


def snowflake() -> str:
    """A new Discord id: milliseconds since 2015 in the high bits, unique in this process."""
    now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
    value = max(now, _clock["last"] + 1)
    _clock["last"] = value
    return str(value)


def _user(user_id: str, name: str, bot: bool) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": bot,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class FakeFile:
    """An attachment a user sends: ``size`` as Discord announces it (defaults to the data's)."""

    name: str
    content_type: str
    data: bytes


@dataclass
class Failure:
    status: int
    retry_after: float
    is_global: bool
    after_store: bool = False  # the call takes effect, and then its answer is lost (a 5xx)


@dataclass
class Interaction:
    """A tap the fake dispatched, and what the bot answered."""

    id: str
    token: str
    created: float  # monotonic
    channel_id: str
    message_id: str
    custom_id: str
    responses: list[dict[str, Any]] = field(default_factory=list)  # callback bodies, in order
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # callback types that came after 3 s


@dataclass
class Session:
    """A gateway session: its numbered events, kept so that a RESUME can replay them."""

    id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    compressor: Any = None  # zlib compressobj of the connection, for zlib-stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def seq(self) -> int:
        return int(self.events[-1]["s"]) if self.events else 0


@dataclass
class FakeDiscord:
    token: str = "fake-discord-token"
    privileged_intents: bool = True  # the Message Content intent is enabled for the bot
    heartbeat_interval_ms: int = 41_250
    bot: dict[str, Any] = field(default_factory=lambda: _user(snowflake(), "clawpen", True))
    user: dict[str, Any] = field(default_factory=lambda: _user(snowflake(), "alice", False))
    guild_id: str = field(default_factory=snowflake)
    channel_id: str = field(default_factory=snowflake)  # the guild's text channel
    dm_channel_id: str = field(default_factory=snowflake)  # the user's DM with the bot
    application_id: str = field(default_factory=snowflake)
    url: str = ""
    sent: list[dict[str, Any]] = field(default_factory=list)  # messages the bot posted
    typing: list[str] = field(default_factory=list)  # channel ids, one per typing call
    calls: list[str] = field(default_factory=list)  # "GET /users/@me", ...
    downloads: list[str] = field(default_factory=list)  # attachment urls fetched
    identifies: int = 0
    resumes: int = 0
    gateway_paths: list[str] = field(default_factory=list)  # of each gateway connection
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    _nonces: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    resend_on_resume: int = 0  # replay this many events the client already had, once
    interactions: dict[str, Interaction] = field(default_factory=dict)  # by id
    edits: list[dict[str, Any]] = field(default_factory=list)  # PATCHes of messages, in order
    uploads: list[dict[str, Any]] = field(default_factory=list)  # files the bot posted
    _files: dict[str, FakeFile] = field(default_factory=dict)
    _connections: list[web.Request] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway-resume", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{name}", self._attachment)
        for method, path, handler in (
            ("GET", "/users/@me", self._me),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/gateway/bot", self._gateway_bot),
            ("GET", "/gateway", self._gateway_url),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
        ):
            app.router.add_route(method, API + path, self._rest(f"{method} {path}", handler))
        for method, path, handler in (  # an interaction's token is its credential
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._callback),
            ("POST", "/webhooks/{application_id}/{interaction_token}", self._follow_up),
        ):
            route = f"{method} {path}"
            app.router.add_route(method, API + path, self._rest(route, handler, auth=False))
        app.router.add_route("*", API + "/{tail:.*}", self._not_found)
        self._runner, self.url = await serve_on_loopback(app, port)
        return self.url

    @property
    def api_base_url(self) -> str:
        """What ``channels.discord.api_base_url`` is set to: the REST base, no version."""
        return f"{self.url}/api"

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/gateway"

    async def close(self) -> None:
        for session in self.sessions.values():
            if session.ws is not None:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the test's side ---------------------------------------------------------------------

    async def post_user_message(
        self,
        channel_id: str,
        content: str,
        guild: bool = True,
        mentions_bot: bool = False,
        attachments: Sequence[FakeFile] = (),
        author_bot: bool = False,
        reply_to: str = "",
        message_id: str = "",
    ) -> str:
        """A user (a bot, with ``author_bot``) writes in a guild channel or thread, or in a DM;
        returns the message id. ``message_id`` reuses an id, as a replayed event would."""
        author = _user(snowflake(), "otherbot", True) if author_bot else self.user
        if mentions_bot:
            content = f"<@{self.bot['id']}> {content}"
        message = self._message(channel_id, content, author, guild, message_id or snowflake())
        message["mentions"] = [self.bot] if mentions_bot else []
        message["attachments"] = [self._attachment_payload(channel_id, f) for f in attachments]
        if reply_to:
            message["message_reference"] = {"message_id": reply_to, "channel_id": channel_id}
            if reply_to in self.messages:
                message["referenced_message"] = self.messages[reply_to]
        await self._dispatch("MESSAGE_CREATE", message)
        return str(message["id"])

    async def push_tap(
        self,
        channel_id: str,
        message_id: str,
        custom_id: str,
        user: dict[str, Any] | None = None,
    ) -> Interaction:
        """``user`` (the fake's user by default) presses the button ``custom_id`` under the
        bot's message: an INTERACTION_CREATE, as Discord sends it (only for a button the
        message really has)."""
        message = self.messages[message_id]
        buttons = [c for row in message.get("components", []) for c in row["components"]]
        if custom_id not in [b.get("custom_id") for b in buttons]:
            raise AssertionError(f"the message {message_id} has no button {custom_id!r}")
        who = user or self.user
        guild = self._guild_of(channel_id)
        interaction = Interaction(
            id=snowflake(),
            token=f"aW50ZXJhY3Rpb246{secrets.token_urlsafe(60)}",
            created=time.monotonic(),
            channel_id=channel_id,
            message_id=message_id,
            custom_id=custom_id,
        )
        channel: dict[str, Any] = self.threads.get(channel_id) or {
            "id": channel_id,
            "type": 0 if guild else 1,
        }
        payload: dict[str, Any] = {
            "id": interaction.id,
            "application_id": self.application_id,
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": channel_id,
            "channel": channel,
            "token": interaction.token,
            "version": 1,
            "message": message,
            "app_permissions": "562949953421311",
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id} if guild else {"1": who["id"]},
            "context": 0 if guild else 1,
        }
        if guild is not None:
            payload["guild_id"] = guild
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                "user": who,
                "roles": [],
                "joined_at": _now(),
                "deaf": False,
                "mute": False,
                "permissions": "1024",
                "flags": 0,
            }
        else:
            payload["user"] = who
        self.interactions[interaction.id] = interaction
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def push_interaction(self, payload: Any) -> None:
        """Any INTERACTION_CREATE, hostile or malformed ones too."""
        await self._dispatch("INTERACTION_CREATE", payload)

    async def create_thread(self, parent_id: str, name: str = "a thread") -> str:
        """A user opens a public thread in ``parent_id``; the bot hears THREAD_CREATE."""
        thread = {
            "id": snowflake(),
            "guild_id": self.guild_id,
            "parent_id": parent_id,
            "owner_id": self.user["id"],
            "name": name,
            "type": 11,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now(),
                "locked": False,
            },
        }
        self.threads[thread["id"]] = thread
        await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return str(thread["id"])

    def fail_next(
        self,
        route: str,
        status: int,
        times: int = 1,
        retry_after: float = 1.0,
        is_global: bool = False,
        after_store: bool = False,
    ) -> None:
        """The next ``times`` calls of ``route`` (``SEND_MESSAGE``, ``TYPING``, or any
        ``"METHOD /path"`` as Discord documents it) answer ``status`` instead; with
        ``after_store`` the call still takes effect (its answer is what gets lost)."""
        self.failures.setdefault(route, []).extend(
            [Failure(status, retry_after, is_global, after_store)] * times
        )

    def calls_to(self, route: str) -> list[str]:
        """The calls made of ``route`` (``SEND_MESSAGE``...), in order."""
        method, _, template = route.partition(" ")
        pattern = re.escape(template).replace(re.escape("{channel_id}"), "[0-9]+")
        return [c for c in self.calls if re.fullmatch(f"{method} {pattern}", c)]

    async def drop_connection(self) -> None:
        """Cut every gateway connection as a network failure would: no close frame. The
        sessions stay resumable, and events posted meanwhile wait for the RESUME."""
        for session in self.sessions.values():
            async with session.lock:
                session.ws = None
        for request in list(self._connections):
            if request.transport is not None:
                request.transport.close()

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME gets INVALID_SESSION (not resumable)."""
        self.sessions.clear()

    def texts_to(self, channel_id: str) -> list[str]:
        return [m["content"] for m in self.sent if m["channel_id"] == channel_id]

    async def wait_for(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)

    async def wait_for_sent(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.sent) >= count, timeout)
        return self.sent

    async def wait_connected(self, timeout: float = 30.0) -> None:
        """Until a client is connected and its session's GUILD_CREATE has gone out."""
        await self.wait_for(
            lambda: any(s.ws is not None and len(s.events) >= 2 for s in self.sessions.values()),
            timeout,
        )

    # -- REST ----------------------------------------------------------------------------------

    def _rest(
        self, route: str, handler: Callable[[web.Request], Any], auth: bool = True
    ) -> Callable[[web.Request], Any]:
        bucket = secrets.token_hex(8)

        async def call(request: web.Request) -> web.StreamResponse:
            self.calls.append(f"{request.method} {request.path.removeprefix(API)}")
            if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                return _error(401, "401: Unauthorized", 0)
            pending = self.failures.get(route)
            if pending:
                failure = pending.pop(0)
                if failure.after_store:
                    await handler(request)
                return _failure(failure, bucket)
            response: web.StreamResponse = await handler(request)
            response.headers.update(_limit_headers(bucket, remaining=4, reset_after=1.0))
            async with self._changed:
                self._changed.notify_all()
            return response

        return call

    async def _not_found(self, request: web.Request) -> web.Response:
        self.calls.append(f"{request.method} {request.path.removeprefix(API)}")
        return _error(404, "404: Not Found", 0)

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot)

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": "clawpen",
                "icon": None,
                "description": "",
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": self.user,
                "verify_key": secrets.token_hex(32),
                "flags": (1 << 19) if self.privileged_intents else 0,  # GATEWAY_MESSAGE_CONTENT
                "bot": self.bot,
            }
        )

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _gateway_url(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _post_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        guild = self._guild_of(channel_id)
        if guild is None and channel_id != self.dm_channel_id:
            return _error(404, "Unknown Channel", 10003)
        if request.content_length and request.content_length > MAX_UPLOAD + 64 * 1024:
            return _error(413, "Request entity too large", 40005)
        body, files = await _message_body(request)
        if sum(len(data) for _, data in files) > MAX_UPLOAD:
            return _error(413, "Request entity too large", 40005)
        content = str(body.get("content") or "")
        components = body.get("components") or []
        if problems := components_problems(components):
            return _error(400, "Invalid Form Body: " + "; ".join(problems), 50035)
        if not content and not files:
            return _error(400, "Cannot send an empty message", 50006)
        if len(content) > 2000:
            return _error(
                400, "Invalid Form Body: content: Must be 2000 or fewer in length.", 50035
            )
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get((channel_id, str(nonce)))
            if earlier is not None:  # Discord: the same nonce again returns the first message
                return _json(earlier)
        reference: Any = body.get("message_reference")
        unknown = reference and str(reference.get("message_id")) not in self.messages
        if unknown and reference.get("fail_if_not_exists", True):
            return _error(400, "Invalid Form Body: Unknown message", 50035)
        message = self._message(channel_id, content, self.bot, guild is not None, snowflake())
        if reference:
            message["message_reference"] = {
                "message_id": str(reference["message_id"]),
                "channel_id": channel_id,
            }
            message["type"] = 19  # REPLY
        if nonce is not None:
            message["nonce"] = nonce
            self._nonces[(channel_id, str(nonce))] = message
        if components:
            message["components"] = components
        for name, data in files:
            attachment = self._attachment_payload(
                channel_id,
                FakeFile(name, mimetypes.guess_type(name)[0] or "application/octet-stream", data),
            )
            message["attachments"].append(attachment)
            self.uploads.append({"message_id": message["id"], "name": name, "data": data})
        async with self._changed:
            self.sent.append(message)
            self._changed.notify_all()
        await self._dispatch("MESSAGE_CREATE", message)  # Discord echoes the bot's own posts
        return _json(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["message_id"])
        if message is None or message["channel_id"] != request.match_info["channel_id"]:
            return _error(404, "Unknown Message", 10008)
        if message["author"]["id"] != self.bot["id"]:
            return _error(403, "Cannot edit a message authored by another user", 50005)
        body = await request.json()
        problem = await self._apply_edit(message, body)
        if problem is not None:
            return problem
        return _json(message)

    async def _apply_edit(self, message: dict[str, Any], body: Any) -> web.Response | None:
        """Change ``message`` as a PATCH or an UPDATE_MESSAGE says (what it leaves out stays)."""
        if not isinstance(body, dict):
            return _error(400, "Invalid Form Body", 50035)
        if "components" in body and (problems := components_problems(body["components"] or [])):
            return _error(400, "Invalid Form Body: " + "; ".join(problems), 50035)
        content = body.get("content", message["content"])
        if not isinstance(content, str) or len(content) > 2000:
            return _error(400, "Invalid Form Body: content", 50035)
        message["content"] = content
        if "components" in body:
            message["components"] = body["components"] or []
        message["edited_timestamp"] = _now()
        self.edits.append({"message_id": message["id"], **body})
        await self._dispatch("MESSAGE_UPDATE", dict(message))
        return None

    async def _callback(self, request: web.Request) -> web.Response:
        """An interaction's response: once, within 3 seconds, by its token."""
        interaction = self.interactions.get(request.match_info["interaction_id"])
        if interaction is None or interaction.token != request.match_info["interaction_token"]:
            return _error(404, "Unknown interaction", 10062)
        body = await request.json()
        kind = body.get("type") if isinstance(body, dict) else None
        if time.monotonic() - interaction.created > INTERACTION_DEADLINE:
            interaction.late.append(int(kind or 0))
            return _error(404, "Unknown interaction", 10062)
        if interaction.responses:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        data = body.get("data") or {}
        if kind == 7:
            message = self.messages[interaction.message_id]
            problem = await self._apply_edit(message, data)
            if problem is not None:
                return problem
        elif kind == 4:
            if not data.get("content"):
                return _error(400, "Cannot send an empty message", 50006)
        elif kind != 6:
            return _error(400, "Invalid Form Body: type: interaction response type", 50035)
        async with self._changed:
            interaction.responses.append(body)
            self._changed.notify_all()
        return web.Response(status=204)

    async def _follow_up(self, request: web.Request) -> web.Response:
        """A follow-up message, by the interaction's token, after its response."""
        token = request.match_info["interaction_token"]
        found = [i for i in self.interactions.values() if i.token == token]
        if request.match_info["application_id"] != self.application_id or not found:
            return _error(404, "Unknown Webhook", 10015)
        interaction = found[0]
        if not interaction.responses:
            return _error(404, "Unknown Webhook", 10015)  # not acknowledged yet
        body = await request.json()
        if not body.get("content"):
            return _error(400, "Cannot send an empty message", 50006)
        message = self._message(
            interaction.channel_id, body["content"], self.bot, True, snowflake()
        )
        message["flags"] = int(body.get("flags") or 0)
        async with self._changed:
            interaction.follow_ups.append(body)
            self._changed.notify_all()
        return _json(message)

    async def _typing(self, request: web.Request) -> web.Response:
        self.typing.append(request.match_info["channel_id"])
        return web.Response(status=204)

    async def _attachment(self, request: web.Request) -> web.Response:
        """The CDN: no token needed, as on cdn.discordapp.com."""
        key = request.match_info["id"]
        file = self._files.get(key)
        if file is None:
            return web.Response(status=404)
        self.downloads.append(str(request.url))
        async with self._changed:
            self._changed.notify_all()
        return web.Response(body=file.data, content_type=file.content_type)

    # -- the gateway ---------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=4096 * 1024)
        await ws.prepare(request)
        self.gateway_paths.append(request.path)
        self._connections.append(request)
        try:
            return await self._converse(ws, request)
        finally:
            self._connections.remove(request)

    async def _converse(
        self, ws: web.WebSocketResponse, request: web.Request
    ) -> web.WebSocketResponse:
        compressor = zlib.compressobj() if request.query.get("compress") == "zlib-stream" else None
        send = _sender(ws, compressor)
        await send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        session: Session | None = None
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                continue
            try:
                payload = json.loads(frame.data)
                op, data = payload["op"], payload.get("d")
            except (ValueError, KeyError, TypeError):
                await ws.close(code=4002, message=b"Error while decoding payload.")
                break
            if op == 1:
                await send({"op": 11})
            elif op == 2:
                session = await self._identify(ws, request, compressor, data)
            elif op == 6:
                session = await self._resume(ws, request, compressor, data)
        if session is not None and session.ws is ws:
            session.ws = None
        return ws

    async def _identify(
        self, ws: web.WebSocketResponse, request: web.Request, compressor: Any, data: Any
    ) -> Session | None:
        if not isinstance(data, dict) or data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents") or 0)
        if intents & PRIVILEGED_INTENTS and not self.privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        self.identifies += 1
        session = Session(id=secrets.token_hex(16))
        self.sessions[session.id] = session
        ready = {
            "v": 10,
            "user": self.bot,
            "guilds": [{"id": self.guild_id, "unavailable": True}],
            "session_id": session.id,
            "resume_gateway_url": self.url.replace("http://", "ws://") + "/gateway-resume",
            "shard": [0, 1],
            "application": {"id": self.application_id, "flags": 1 << 19},
            "private_channels": [],
        }
        async with session.lock:
            session.ws, session.compressor = ws, compressor
            await self._emit(session, "READY", ready)
            await self._emit(session, "GUILD_CREATE", self._guild())
        async with self._changed:
            self._changed.notify_all()
        return session

    async def _resume(
        self, ws: web.WebSocketResponse, request: web.Request, compressor: Any, data: Any
    ) -> Session | None:
        known = isinstance(data, dict) and data.get("token") == self.token
        session = self.sessions.get(str(data.get("session_id"))) if known else None
        if session is None:
            await _sender(ws, compressor)({"op": 9, "d": False})
            return None
        self.resumes += 1
        after = int(data.get("seq") or 0) - self.resend_on_resume
        self.resend_on_resume = 0
        async with session.lock:
            session.ws, session.compressor = ws, compressor
            send = _sender(ws, compressor)
            for event in session.events:
                if event["s"] > after:
                    await send(event)
            await self._emit(session, "RESUMED", {})
        async with self._changed:
            self._changed.notify_all()
        return session

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Number ``event`` in every session and send it where a client is connected."""
        if event == "MESSAGE_CREATE":
            self.messages[str(data["id"])] = data
        for session in list(self.sessions.values()):
            async with session.lock:
                await self._emit(session, event, data)

    async def _emit(self, session: Session, event: str, data: dict[str, Any]) -> None:
        """Record and send one dispatch; the caller holds ``session.lock``."""
        payload = {"op": 0, "t": event, "s": session.seq + 1, "d": data}
        session.events.append(payload)
        if session.ws is not None and not session.ws.closed:
            try:
                await _sender(session.ws, session.compressor)(payload)
            except (ConnectionError, RuntimeError):
                session.ws = None  # the client will resume and get it then

    # -- payloads ------------------------------------------------------------------------------

    def _guild_of(self, channel_id: str) -> str | None:
        if channel_id == self.channel_id or channel_id in self.threads:
            return self.guild_id
        return None

    def _message(
        self, channel_id: str, content: str, author: dict[str, Any], guild: bool, message_id: str
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": message_id,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if guild:
            message["guild_id"] = self.guild_id
            message["member"] = {"roles": [], "joined_at": _now(), "deaf": False, "mute": False}
        return message

    def _attachment_payload(self, channel_id: str, file: FakeFile) -> dict[str, Any]:
        key = snowflake()
        self._files[key] = file
        url = f"{self.url}/attachments/{channel_id}/{key}/{file.name}"
        return {
            "id": key,
            "filename": file.name,
            "size": len(file.data),
            "url": url,
            "proxy_url": url,
            "content_type": file.content_type,
        }

    def _guild(self) -> dict[str, Any]:
        channel = {
            "id": self.channel_id,
            "type": 0,
            "guild_id": self.guild_id,
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        return {
            "id": self.guild_id,
            "name": "clawpen test",
            "icon": None,
            "owner_id": self.user["id"],
            "unavailable": False,
            "large": False,
            "member_count": 2,
            "joined_at": _now(),
            "roles": [
                {
                    "id": self.guild_id,
                    "name": "@everyone",
                    "permissions": "1024",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                }
            ],
            "channels": [channel],
            "threads": list(self.threads.values()),
            "members": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "premium_tier": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
            "preferred_locale": "en-US",
            "afk_timeout": 300,
        }


async def _message_body(request: web.Request) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """A message's JSON, and its files when it came as multipart (``payload_json`` and
    ``files[n]``, as discord.py and Discord's docs send them)."""
    if not request.content_type.startswith("multipart/"):
        parsed = await request.json()
        return (parsed if isinstance(parsed, dict) else {}), []
    body: dict[str, Any] = {}
    files: list[tuple[str, bytes]] = []
    reader = await request.multipart()
    async for part in reader:
        name = getattr(part, "name", "") or ""
        data = await part.read()  # type: ignore[union-attr]
        if name == "payload_json":
            body = json.loads(data)
        elif re.fullmatch(r"files\[[0-9]+\]", name):
            files.append((getattr(part, "filename", None) or "file", bytes(data)))
    return body, files


def _sender(ws: web.WebSocketResponse, compressor: Any) -> Callable[[dict[str, Any]], Any]:
    """Sends one gateway payload: a text frame, or a zlib-stream chunk ending in a sync flush."""

    async def send(payload: dict[str, Any]) -> None:
        data = json.dumps(payload)
        if compressor is None:
            await ws.send_str(data)
        else:
            chunk = compressor.compress(data.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
            await ws.send_bytes(chunk)

    return send


def _limit_headers(bucket: str, remaining: int, reset_after: float) -> dict[str, str]:
    return {
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
    }


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it: ``Content-Type: application/json`` exactly, no charset
    (discord.py reads any other content type as plain text)."""
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _error(status: int, message: str, code: int) -> web.Response:
    return _json({"message": message, "code": code}, status=status)


def _failure(failure: Failure, bucket: str) -> web.Response:
    if failure.status != 429:
        if failure.status >= 500:
            return web.Response(status=failure.status, text="upstream connect error")
        messages = {403: ("Missing Access", 50001), 404: ("Unknown Channel", 10003)}
        message, code = messages.get(failure.status, ("Bad Request", 0))
        return _error(failure.status, message, code)
    headers = {
        **_limit_headers(bucket, remaining=0, reset_after=failure.retry_after),
        "Retry-After": str(max(1, round(failure.retry_after))),
        "X-RateLimit-Scope": "global" if failure.is_global else "user",
        "Via": "1.1 google",
    }
    if failure.is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {
        "message": "You are being rate limited.",
        "retry_after": failure.retry_after,
        "global": failure.is_global,
        "code": 0,
    }
    return _json(body, status=429, headers=headers)
