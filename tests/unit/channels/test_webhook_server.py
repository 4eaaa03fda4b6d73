"""The webhook server on its own: what it answers when a sender or a handler goes wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from clawpen.channels.webhook import (
    Refused,
    WebhookRequest,
    WebhookResponse,
    WebhookServer,
    secret_matches,
)
from clawpen.errors import StoreUnavailable


async def handler(request: WebhookRequest) -> WebhookResponse:
    """Behaves as the body says: a test's whole platform."""
    if request.body == b"bug":
        raise RuntimeError("a handler bug")
    if request.body == b"full":
        raise StoreUnavailable("disk full")
    if not secret_matches("s3cret", request.headers.get("X-Secret")):
        raise Refused(401, "secret wrong")
    return WebhookResponse(200, f"got {len(request.body)}")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    server = WebhookServer("test", "127.0.0.1", 0, {"/hook": handler}, max_body=1000)
    async with server.running() as base:
        yield base + "/hook"


async def post(url: str, body: object, secret: str = "s3cret") -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"X-Secret": secret}) as response,
    ):
        return response.status


async def test_a_handler_bug_is_a_logged_500_and_the_server_goes_on(url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        assert await post(url, b"bug") == 500
    assert [e["event"] for e in logs] == ["webhook_handler_error"]
    assert await post(url, b"fine") == 200


async def test_an_uncommitted_event_is_a_503_so_the_platform_delivers_it_again(url: str) -> None:
    assert await post(url, b"full") == 503


async def test_a_refusal_is_its_status_and_one_log_line(url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        assert await post(url, b"fine", secret="guess") == 401
    [line] = logs
    assert (line["event"], line["status"], line["reason"]) == (
        "webhook_refused",
        401,
        "secret wrong",
    )


async def test_bodies_over_the_limit_are_refused_declared_or_chunked(url: str) -> None:
    assert await post(url, b"x" * 1000) == 200
    assert await post(url, b"x" * 1001) == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: found out while reading
        for _ in range(20):
            yield b"x" * 100

    assert await post(url, chunked()) == 413


async def test_other_paths_and_methods_are_4xx(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/more", data=b"") as response:
            assert response.status == 404
        async with http.put(url, data=b"") as response:
            assert response.status == 405
