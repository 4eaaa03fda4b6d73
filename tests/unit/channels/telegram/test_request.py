"""python-telegram-bot over aiohttp: parameters, files, timeouts and errors arrive as PTB
expects them from its own httpx transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from telegram import InputFile
from telegram.error import NetworkError, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter

from clawpen.channels.telegram.request import AiohttpRequest
from tests.fakes import serve_on_loopback

SLOW_ANSWER = 1.0
"""Seconds the fake server takes over ``/slow``: its pace, well past the client's deadline."""


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(SLOW_ANSWER)
        form = await request.post()
        seen.append(
            {
                "agent": request.headers.get("User-Agent", ""),
                "fields": {
                    k: v if isinstance(v, str) else (v.filename, v.file.read())
                    for k, v in form.items()
                },
            }
        )
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner, url = await serve_on_loopback(app)
    yield url, seen
    await runner.cleanup()


@pytest.fixture
async def request_() -> AsyncIterator[AiohttpRequest]:
    request = AiohttpRequest(read_timeout=1.0)
    await request.initialize()
    yield request
    await request.shutdown()


async def test_parameters_go_as_form_fields(
    server: tuple[str, list[dict[str, Any]]], request_: AiohttpRequest
) -> None:
    url, seen = server
    data = RequestData(
        [RequestParameter.from_input("chat_id", 42), RequestParameter.from_input("text", "héllo")]
    )
    status, body = await request_.do_request(f"{url}/sendMessage", "POST", data)
    assert (status, body) == (200, b'{"ok": true, "result": true}')
    assert seen[0]["fields"] == {"chat_id": "42", "text": "héllo"}
    assert seen[0]["agent"].startswith("python-telegram-bot")


async def test_files_go_as_multipart(
    server: tuple[str, list[dict[str, Any]]], request_: AiohttpRequest
) -> None:
    url, seen = server
    document = InputFile(b"%PDF-1.4 tiny", filename="report.pdf")
    data = RequestData(
        [
            RequestParameter.from_input("chat_id", 42),
            RequestParameter.from_input("document", document),
        ]
    )
    await request_.do_request(f"{url}/sendDocument", "POST", data)
    fields = seen[0]["fields"]
    assert fields["chat_id"] == "42"
    [(filename, content)] = [v for v in fields.values() if isinstance(v, tuple)]
    assert (filename, content) == ("report.pdf", b"%PDF-1.4 tiny")


async def test_a_slow_answer_is_timed_out(
    server: tuple[str, list[dict[str, Any]]], request_: AiohttpRequest
) -> None:
    url, _ = server
    with pytest.raises(TimedOut):
        await request_.do_request(f"{url}/slow", "POST", read_timeout=0.2)


async def test_no_server_is_a_network_error(request_: AiohttpRequest) -> None:
    with pytest.raises(NetworkError, match="aiohttp"):
        await request_.do_request("http://127.0.0.1:9/getMe", "POST")
