"""Egress off the list is asked for instead of refused: "Allow once" lets one connection
through and the next asks again; "Allow this host from now on" is kept in the store (listed,
revocable), and a revoked host asks again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from clawpen.app import Orchestrator
from tests.conftest import running
from tests.fakes import serve_on_loopback
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from .test_approvals import OWNER, button, cards


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from upstream")

    app.router.add_get("/{tail:.*}", hello)
    runner, url = await serve_on_loopback(app)
    yield int(url.rsplit(":", 1)[1])
    await runner.cleanup()


async def through_proxy(orchestrator: Orchestrator, port: int) -> str:
    """What the agent's forwarder does: CONNECT, then a request through the tunnel."""
    [proxy] = orchestrator.egress
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
    try:
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = await reader.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 200"):
            return status.decode() + (await reader.read()).decode()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return (await asyncio.wait_for(reader.read(), 30)).decode()
    finally:
        writer.close()


async def tap(fake: FakeTelegram, card: dict[str, Any], label: str) -> None:
    query = await fake.push_tap(OWNER, card["message_id"], button(card, label), OWNER)
    await fake.wait_for_answer(query)


async def test_allow_once_against_allow_from_now_on(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    upstream: int,
) -> None:
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        agents=[
            {
                "id": "assistant",
                "approvals": {"ask": ["egress"], "approvers": [f"telegram:{OWNER}"]},
            }
        ],
        allow_loopback_for_tests=[f"127.0.0.1:{upstream}"],
    )
    async with asyncio.timeout(60), running(orchestrator):
        once = asyncio.create_task(through_proxy(orchestrator, upstream))
        await until(lambda: len(cards(fake_telegram)) == 1, what="the first card")
        first = cards(fake_telegram)[0]
        labels = [b["text"] for row in first["reply_markup"]["inline_keyboard"] for b in row]
        assert labels == ["Allow once", "Allow this host from now on", "Deny"]
        assert f"connect to 127.0.0.1:{upstream}" in first["text"]
        assert not once.done()  # held until someone decides
        await tap(fake_telegram, first, "Allow once")
        assert "hello from upstream" in await once

        again = asyncio.create_task(through_proxy(orchestrator, upstream))
        await until(lambda: len(cards(fake_telegram)) == 2, what="a second card: once was once")
        await tap(fake_telegram, cards(fake_telegram)[1], "Allow this host")
        assert "hello from upstream" in await again

        assert "hello from upstream" in await through_proxy(orchestrator, upstream)
        assert len(cards(fake_telegram)) == 2  # from now on: no card
        kept = await orchestrator.store.egress_allowed("assistant")
        assert [(agent, host) for agent, host, _ in kept] == [
            ("assistant", f"127.0.0.1:{upstream}")
        ]

        assert await orchestrator.store.revoke_egress("assistant", f"127.0.0.1:{upstream}")
        revoked = asyncio.create_task(through_proxy(orchestrator, upstream))
        await until(lambda: len(cards(fake_telegram)) == 3, what="a card once revoked")
        await tap(fake_telegram, cards(fake_telegram)[2], "Deny")
        refused = await revoked
    assert refused.startswith("HTTP/1.1 403")
    assert "denied by telegram:1001" in refused
