"""A fake Telegram Bot API: getMe, getUpdates (long polling), sendMessage (with an inline
keyboard), editMessageText, answerCallbackQuery, sendPhoto and sendDocument (multipart uploads,
kept in ``uploads``).

Speaks the real HTTP API (``/bot<token>/<method>``, JSON or form-encoded parameters, the
``{"ok": ..., "result": ...}`` envelope), so python-telegram-bot drives it unmodified. Tests
play the user with ``push_text`` (and tap a button with ``push_tap``) and read what the bot
said from ``sent`` (a card's current text and keyboard, as edited) and ``answers``;
``fail_next`` injects 429s and 5xxs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from . import serve_on_loopback

BOT_USER = {
    "id": 4242,
    "is_bot": True,
    "first_name": "clawpen",
    "username": "clawpen_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Failure:
    status: int
    retry_after: int | None = None
    chat_id: int | None = None  # only calls for this chat fail (None: any call)


@dataclass
class FakeTelegram:
    token: str = "123:fake-token"
    updates: list[dict[str, Any]] = field(default_factory=list)  # not yet confirmed
    sent: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)  # answerCallbackQuery calls
    edits: list[dict[str, Any]] = field(default_factory=list)  # editMessageText calls
    # files the bot uploaded: {"method", "chat_id", "name", "content_type", "data", "caption"}
    uploads: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    url: str = ""
    _next_update: int = 1
    _next_message: int = 1
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> content (getFile)
    _paths: dict[str, str] = field(default_factory=dict)  # file_id -> file_path
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=60 * 1024 * 1024)  # the Bot API takes 50 MB
        app.router.add_route("*", "/bot{token}/{method}", self._call)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner, self.url = await serve_on_loopback(app, port)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the test's side: play the user --------------------------------------------------------

    async def push_text(self, chat_id: int, text: str, user_id: int | None = None) -> int:
        """A user writes ``text`` in chat ``chat_id``; returns the message id."""
        return await self._push(chat_id, {"text": text}, user_id)

    async def push_photo(
        self, chat_id: int, caption: str | None = None, data: bytes = b"\xff\xd8\xff photo"
    ) -> int:
        """A user sends a photo (with a caption, or none); Telegram offers it in two sizes."""
        small = self._add_file(data[:4], "photos/{id}.jpg")
        large = self._add_file(data, "photos/{id}.jpg")
        content: dict[str, Any] = {
            "photo": [
                {**small, "width": 90, "height": 90},
                {**large, "width": 1280, "height": 960},
            ]
        }
        if caption is not None:
            content["caption"] = caption
        return await self._push(chat_id, content, None)

    async def push_document(
        self,
        chat_id: int,
        name: str,
        mime_type: str,
        data: bytes,
        caption: str | None = None,
        size: int | None = None,
    ) -> int:
        """A user sends a file; ``size`` overrides the size Telegram announces."""
        document = self._add_file(data, "documents/{id}-" + name)
        document.update(file_name=name, mime_type=mime_type)
        if size is not None:
            document["file_size"] = size
        content: dict[str, Any] = {"document": document}
        if caption is not None:
            content["caption"] = caption
        return await self._push(chat_id, content, None)

    async def push_tap(self, chat_id: int, message_id: int, data: str, user_id: int) -> str:
        """User ``user_id`` taps the button carrying ``data`` under the bot's message
        ``message_id`` in ``chat_id``; returns the callback query's id."""
        card = next(
            m for m in self.sent if m["message_id"] == message_id and m["chat"]["id"] == chat_id
        )
        query_id = f"cq{self._next_update}"
        update = {
            "update_id": self._next_update,
            "callback_query": {
                "id": query_id,
                "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
                "message": card,
                "chat_instance": str(chat_id),
                "data": data,
            },
        }
        self._next_update += 1
        async with self._changed:
            self.updates.append(update)
            self._changed.notify_all()
        return query_id

    def card(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """The bot's message as it stands now (after edits)."""
        return next(
            m for m in self.sent if m["message_id"] == message_id and m["chat"]["id"] == chat_id
        )

    async def wait_for_answer(self, query_id: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: any(a["callback_query_id"] == query_id for a in self.answers)
            )
        return next(a for a in self.answers if a["callback_query_id"] == query_id)

    def _add_file(self, data: bytes, path: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        self._paths[file_id] = path.format(id=file_id)
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(data)}

    async def _push(self, chat_id: int, content: dict[str, Any], user_id: int | None) -> int:
        message_id = self._next_message
        self._next_message += 1
        user = {"id": user_id or chat_id, "is_bot": False, "first_name": f"user{chat_id}"}
        update = {
            "update_id": self._next_update,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": user,
                **content,
            },
        }
        self._next_update += 1
        async with self._changed:
            self.updates.append(update)
            self._changed.notify_all()
        return message_id

    def fail_next(
        self,
        method: str,
        status: int,
        times: int = 1,
        retry_after: int | None = None,
        chat_id: int | None = None,
    ) -> None:
        failure = Failure(status, retry_after, chat_id)
        self.failures.setdefault(method, []).extend([failure] * times)

    def texts_to(self, chat_id: int) -> list[str]:
        return [m["text"] for m in self.sent if m["chat"]["id"] == chat_id]

    async def wait_for_sent(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.sent) >= count)
        return self.sent

    # -- the bot's side ---------------------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _fail(401, "Unauthorized")
        method = request.match_info["method"]
        self.calls.append(method)
        params = await _params(request)
        pending = self.failures.get(method, [])
        chat = params.get("chat_id")
        failure = next(
            (f for f in pending if f.chat_id is None or str(f.chat_id) == str(chat)), None
        )
        if failure is not None:
            pending.remove(failure)
            return _fail(
                failure.status,
                "Too Many Requests" if failure.status == 429 else "Internal Server Error",
                failure.retry_after,
            )
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[web.Response]]] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "sendPhoto": partial(self._send_upload, "sendPhoto", "photo"),
            "sendDocument": partial(self._send_upload, "sendDocument", "document"),
        }
        handler = handlers.get(method)
        if handler is None:
            return _ok(True)  # deleteWebhook, close, ... : accepted and ignored
        return await handler(params)

    async def _get_me(self, params: dict[str, Any]) -> web.Response:
        return _ok(BOT_USER)

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        async with self._changed:
            if offset:  # confirming an offset forgets every update before it, as Telegram does
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: bool(self.updates))
            except TimeoutError:
                pass
            return _ok(list(self.updates[:100]))

    async def _get_file(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params.get("file_id", ""))
        if file_id not in self.files:
            return _fail(400, "Bad Request: invalid file_id")
        return _ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_size": len(self.files[file_id]),
                "file_path": self._paths[file_id],
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        wanted = request.match_info["path"]
        for file_id, path in self._paths.items():
            if path == wanted:
                return web.Response(body=self.files[file_id])
        return web.Response(status=404)

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text", ""))
        if not text:
            return _fail(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return _fail(400, "Bad Request: message is too long")
        message = {
            "message_id": self._next_message,
            "date": int(time.time()),
            "text": text,
            "chat": {"id": int(params["chat_id"]), "type": "private"},
            "from": BOT_USER,
        }
        markup = params.get("reply_markup")
        if markup:
            keyboard = markup.get("inline_keyboard") if isinstance(markup, dict) else None
            if not _valid_keyboard(keyboard):
                return _fail(400, "Bad Request: can't parse inline keyboard button")
            message["reply_markup"] = {"inline_keyboard": keyboard}
        self._next_message += 1
        async with self._changed:
            self.sent.append(message)
            self._changed.notify_all()
        return _ok(message)

    async def _edit_message_text(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text", ""))
        try:
            chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
            message = self.card(chat_id, message_id)
        except (KeyError, ValueError, StopIteration):
            return _fail(400, "Bad Request: message to edit not found")
        if not text:
            return _fail(400, "Bad Request: message text is empty")
        markup = params.get("reply_markup")
        if text == message["text"] and not markup and "reply_markup" not in message:
            return _fail(400, "Bad Request: message is not modified")
        async with self._changed:
            message["text"] = text
            message["edit_date"] = int(time.time())
            if markup:
                message["reply_markup"] = markup
            else:
                message.pop("reply_markup", None)  # Telegram drops a keyboard not sent again
            self.edits.append({"chat_id": chat_id, "message_id": message_id, "text": text})
            self._changed.notify_all()
        return _ok(message)

    async def _answer_callback_query(self, params: dict[str, Any]) -> web.Response:
        query_id = str(params.get("callback_query_id", ""))
        if not query_id:
            return _fail(400, "Bad Request: query is too old or query ID is invalid")
        async with self._changed:
            self.answers.append({"callback_query_id": query_id, "text": params.get("text", "")})
            self._changed.notify_all()
        return _ok(True)

    async def _send_upload(self, method: str, field: str, params: dict[str, Any]) -> web.Response:
        upload = params.get(field)
        if not isinstance(upload, web.FileField):
            return _fail(400, f"Bad Request: there is no {field} in the request")
        data = upload.file.read()
        if not data:
            return _fail(400, "Bad Request: file must be non-empty")
        chat_id = int(params["chat_id"])
        record = {
            "method": method,
            "chat_id": chat_id,
            "name": upload.filename,
            "content_type": upload.content_type,
            "data": data,
            "caption": params.get("caption", ""),
        }
        message: dict[str, Any] = {
            "message_id": self._next_message,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": BOT_USER,
        }
        if field == "photo":
            size = {"file_id": "p1", "file_unique_id": "up1", "width": 1, "height": 1}
            message["photo"] = [size]
        else:
            message["document"] = {"file_id": "d1", "file_unique_id": "ud1"}
        self._next_message += 1
        async with self._changed:
            self.uploads.append(record)
            self._changed.notify_all()
        return _ok(message)

    async def wait_for_uploads(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.uploads) >= count)
        return self.uploads


def _valid_keyboard(keyboard: Any) -> bool:
    """Rows of buttons, each with a text and callback_data of 1-64 bytes, as Telegram checks."""
    if not isinstance(keyboard, list) or not keyboard:
        return False
    for row in keyboard:
        if not isinstance(row, list):
            return False
        for button in row:
            data = button.get("callback_data") if isinstance(button, dict) else None
            if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                return False
            if not button.get("text"):
                return False
    return True


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.method == "POST":
        for key, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                params[key] = value  # an upload (sendPhoto, sendDocument)
                continue
            text = value if isinstance(value, str) else ""
            try:
                params[key] = json.loads(text) if text[:1] in "[{" else text
            except ValueError:
                params[key] = text
    return params


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _fail(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["description"] = f"Too Many Requests: retry after {retry_after}"
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)
