"""The agent's reach outside its container, end to end in-process: send_message to its own
paired chat is delivered through the outbox, to another agent's chat refused; web_fetch works
only when enabled; server-side tools reach the upstream only when the agent enables them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.models import Address
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.tools.send import send_target
from tests.conftest import running
from tests.fakes import serve_on_loopback
from tests.fakes.fake_channel import MemoryChannel

AGENTS = [{"id": "assistant"}, {"id": "bob"}]


def tool(name: str, **args: object) -> str:
    return f"tool: {name} {json.dumps(args)}"


def test_where_a_message_may_go() -> None:
    pairings = {Address("telegram", "1"): "a", Address("telegram", "2"): "b"}
    answering = Address("telegram", "1", "t9")
    assert send_target("a", None, answering, pairings) == answering  # its thread kept
    assert send_target("a", "telegram:1", None, pairings) == Address("telegram", "1")
    assert send_target("a", "cli:a", None, pairings) == Address("cli", "a")
    assert "not a chat paired with you" in str(send_target("a", "telegram:2", None, pairings))
    assert "not a chat paired with you" in str(send_target("a", "cli:b", None, pairings))
    assert "not a chat paired with you" in str(send_target("a", "telegram:3", None, pairings))
    assert "you are not answering a chat" in str(send_target("a", None, None, pairings))
    job = Address("job", "daily")
    assert "you are not answering a chat" in str(send_target("a", None, job, pairings))


async def test_send_message_reaches_its_own_chat_before_the_answer_and_not_another_agents(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}, agents=AGENTS
    )
    async with running(orchestrator):
        await channel.push("assistant", tool("send_message", text="working on it"))
        await channel.wait_sent(2)
        await channel.push("assistant", tool("send_message", text="hi bob", to="cli:bob"))
        await channel.wait_sent(3)
    mine = channel.texts_to("assistant")
    assert mine[0] == "working on it"  # delivered first: committed while the task ran
    assert mine[1] == "tool said:\nsent to cli:assistant"
    assert "refused (403): cli:bob is not a chat paired with you" in mine[2]
    assert channel.texts_to("bob") == []


@pytest.fixture
async def page_server() -> AsyncIterator[str]:
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<h1>Local news</h1><p>All quiet.</p>", content_type="text/html")

    app.router.add_get("/news", page)
    runner, url = await serve_on_loopback(app)
    yield url
    await runner.cleanup()


async def test_web_fetch_works_only_for_an_agent_that_enables_it(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path, page_server: str
) -> None:
    channel = MemoryChannel(name="cli")
    port = page_server.rsplit(":", 1)[1]
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"cli": channel},
        agents=[{"id": "assistant", "web_fetch": {"enabled": True}}, {"id": "bob"}],
        allow_loopback_for_tests=[f"127.0.0.1:{port}"],
    )
    async with running(orchestrator):
        await channel.push("assistant", tool("web_fetch", url=f"{page_server}/news"))
        await channel.push("bob", tool("web_fetch", url=f"{page_server}/news"))
        await channel.push("assistant", tool("web_fetch", url="http://169.254.169.254/"))
        await channel.wait_sent(3)
    fetched, metadata = channel.texts_to("assistant")
    assert "HTTP 200, text/html" in fetched and "# Local news\n\nAll quiet." in fetched
    assert "refused (403): refused: the cloud metadata address 169.254.169.254" in metadata
    assert "web_fetch is not enabled for you" in channel.texts_to("bob")[0]


async def test_web_search_reaches_the_upstream_only_when_the_agent_enables_it(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path, fake_model: FakeModel
) -> None:
    """The proxy's request allowlist (modelrequest.py), end to end through the socket."""
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"cli": channel},
        agents=[{"id": "assistant", "server_tools": ["web_search"]}, {"id": "bob"}],
    )
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    body = {"model": "claude-test", "max_tokens": 50, "tools": [search]}
    body["messages"] = [{"role": "user", "content": "search"}]
    async with running(orchestrator):
        for agent in ("assistant", "bob"):
            session = orchestrator.pool.sessions[agent]
            status, _ = await _post(session.socket_path, "/v1/messages", body)
            assert status == 200
    enabled, disabled = fake_model.requests[-2:]
    assert enabled["tools"] == [search]
    assert "tools" not in disabled or disabled["tools"] == []


async def _post(path: Path, url: str, body: dict[str, object]) -> tuple[int, bytes]:
    import aiohttp

    connector = aiohttp.UnixConnector(path=str(path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"http://agent{url}", json=body) as response,
    ):
        return response.status, await response.read()
