"""A fake Anthropic Messages API: JSON and SSE streaming, with tool use.

Its behaviour is a pure function of the conversation, so tests can predict every answer:

* a user turn containing ``run: CMD`` asks for the ``shell`` tool with ``{"command": CMD}``;
* ``schedule: {JSON}`` asks for the ``schedule_job`` tool with that input, ``list jobs`` for
  ``list_jobs`` and ``cancel job: NAME`` for ``cancel_job``;
* a user turn starting ``tool: NAME {JSON}`` asks for any tool NAME with that input;
* a turn of tool results is answered with ``tool said:`` and the results' text;
* ``remember: KEY = VALUE`` asks for ``memory_set``, ``recall: KEY`` for ``memory_get``;
* a request to summarise (``clawpen_agent.compact.SUMMARISE_MARKER``) is answered with
  ``Summary: `` and the first words of each user line of the transcript;
* anything else is echoed as ``echo: TEXT`` (text blocks that are Claude Code's
  ``<system-reminder>`` context are not part of TEXT).

``usage`` accounts prompt caching by prefix as the API does (``prompt_cache.py``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from clawpen_agent.compact import SUMMARISE_MARKER

from . import serve_on_loopback
from .prompt_cache import PromptCache

MODEL_ERRORS = {
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.get("type") == "text":
            if not block["text"].startswith("<system-reminder>"):  # Claude Code's context
                parts.append(block["text"])
        elif block.get("type") in ("image", "document"):
            # say what it saw, so a test can tell the model got the very bytes the user sent
            source = block.get("source", {})
            data = base64.b64decode(source.get("data", ""))
            digest = hashlib.sha256(data).hexdigest()[:12]
            parts.append(f"[{block['type']}: {source.get('media_type')}, sha256 {digest}]")
        elif block.get("type") == "tool_result":
            inner = block.get("content", "")
            parts.append(_text_of(inner) if not isinstance(inner, str) else inner)
    return "\n".join(parts)


def decide(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks of the fake model's answer to a conversation. ``system`` messages
    (Claude Code sends its environment as one, after the user's turn) are context, not a turn."""
    last = [m for m in messages if m.get("role") != "system"][-1]
    content = last.get("content", "")
    if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
        return [{"type": "text", "text": "tool said:\n" + _text_of(content)}]
    text = _text_of(content)
    if text.startswith(SUMMARISE_MARKER):
        return [{"type": "text", "text": summarise(text)}]
    tool = _job_tool(text) or _memory_tool(text)
    if tool is not None:
        return [
            {"type": "text", "text": "On it."},
            {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", **tool},
        ]
    if "run: " in text:
        command = text.split("run: ", 1)[1].strip()
        return [
            {"type": "text", "text": "Let me run that."},
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": "shell",
                "input": {"command": command},
            },
        ]
    return [{"type": "text", "text": f"echo: {text}"}]


def summarise(request: str) -> str:
    """``Summary: ``, what the previous summary said, and the start of each user line of the
    transcript, in order: what was said early survives every compaction."""
    lines = request.splitlines()
    earlier = [line.removeprefix("Summary: ") for line in lines if line.startswith("Summary: ")]
    said = [line[6:46] for line in lines if line.startswith("user: ")]
    said = [line for line in said if not line.startswith("[tool result]")]
    return "Summary: " + " | ".join(earlier + said)


def _memory_tool(text: str) -> dict[str, Any] | None:
    if "remember: " in text and " = " in text:
        key, _, value = text.split("remember: ", 1)[1].partition(" = ")
        return {"name": "memory_set", "input": {"key": key.strip(), "value": value.strip()}}
    if "recall: " in text:
        return {"name": "memory_get", "input": {"key": text.split("recall: ", 1)[1].strip()}}
    return None


def respond(body: dict[str, Any], cache: PromptCache) -> dict[str, Any]:
    """The whole answer (a Messages API message) to a request body; ``cache`` is updated."""
    blocks = decide(body["messages"])
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {**cache.account(body), "output_tokens": max(1, len(json.dumps(blocks)) // 4)},
    }


def _job_tool(text: str) -> dict[str, Any] | None:
    if text.startswith("tool: "):  # any tool: "tool: web_fetch {"url": "..."}"
        name, _, raw = text.removeprefix("tool: ").partition(" ")
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError:
            args = {"raw": raw}
        return {"name": name.strip(), "input": args}
    if "schedule: " in text:
        raw = text.split("schedule: ", 1)[1].strip()
        try:
            args = json.loads(raw)
        except ValueError:
            args = {"raw": raw}
        return {"name": "schedule_job", "input": args}
    if "list jobs" in text:
        return {"name": "list_jobs", "input": {}}
    if "cancel job: " in text:
        return {"name": "cancel_job", "input": {"name": text.split("cancel job: ", 1)[1].strip()}}
    return None


@dataclass
class FakeModel:
    """``await start()`` serves on 127.0.0.1; ``url`` is the base URL for clients."""

    api_key: str | None = None
    delay: float = 0.0  # seconds of "thinking" before answering
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # statuses to answer next, in order
    cache: PromptCache = field(default_factory=PromptCache)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        self._runner, self.url = await serve_on_loopback(app, port)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """The models list (what `clawpen doctor` asks: it costs no tokens)."""
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return _error(401, "invalid x-api-key")
        return web.json_response({"data": [{"type": "model", "id": "claude-test"}]})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        offered = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if self.api_key is not None and offered != self.api_key:
            return _error(401, "invalid x-api-key")
        body = await request.json()
        self.requests.append(body)
        if self.failures:
            return _error(self.failures.pop(0), "injected failure")
        if self.delay:
            await asyncio.sleep(self.delay)
        message = respond(body, self.cache)
        if not body.get("stream"):
            return web.json_response(message)
        return await self._stream(request, message)

    async def _stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        await event("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for piece in _pieces(block["text"]):
                    await event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
            else:
                empty = {**block, "input": {}}
                await event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": empty},
                )
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(block["input"]),
                        },
                    },
                )
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response


def _pieces(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _error(status: int, message: str) -> web.Response:
    kind = MODEL_ERRORS.get(status, "api_error")
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}}, status=status
    )


async def serve_forever(port: int, api_key: str | None = None) -> None:
    model = FakeModel(api_key=api_key)
    print(f"fake model API on {await model.start(port)}", flush=True)
    await asyncio.Event().wait()
