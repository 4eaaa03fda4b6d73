"""A remote MCP server (streamable HTTP on loopback, the official SDK) reached through the
orchestrator: the agent lists and calls its tools through its door as SERVER__tool, and the
credential the orchestrator adds never reaches the agent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.runtime.inprocess import InProcessRuntime
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.mcp_servers import RemoteMcp
from tests.waiting import until

TOKEN = "mcp-remote-credential-0123456789"


@pytest.fixture
async def remote() -> AsyncIterator[RemoteMcp]:
    server = RemoteMcp(TOKEN)
    await server.start()
    yield server
    await server.close()


def tool(name: str, **args: object) -> str:
    return f"tool: {name} {json.dumps(args)}"


async def test_a_remote_servers_tools_are_listed_and_called_through_the_door(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_model: FakeModel,
    remote: RemoteMcp,
    tmp_path: Path,
) -> None:
    channel = MemoryChannel(name="cli")
    server = {"name": "weather", "url": remote.url, "headers": {"Authorization": f"Bearer {TOKEN}"}}
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"cli": channel},
        agents=[{"id": "assistant", "mcp_servers": [server]}],
    )
    async with running(orchestrator):
        await channel.push("assistant", tool("weather__forecast", city="Paris"))
        await channel.wait_sent(1)
        await channel.push("assistant", tool("weather__nothing"))
        await channel.wait_sent(2)
    forecast, unknown = channel.texts_to("assistant")
    assert "Sunny in Paris, 21 C" in forecast
    assert remote.calls == [("forecast", {"city": "Paris"})]
    offered = {t["name"] for t in fake_model.requests[0]["tools"]}
    assert "weather__forecast" in offered
    assert "unknown tool 'weather__nothing'" in unknown
    assert all(h.get("authorization") == f"Bearer {TOKEN}" for h in remote.headers_seen)
    assert TOKEN not in json.dumps(fake_model.requests)  # nothing of it reached the agent


async def test_a_remote_server_that_refuses_the_credential_costs_only_its_tools(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_model: FakeModel,
    remote: RemoteMcp,
    tmp_path: Path,
) -> None:
    channel = MemoryChannel(name="cli")
    server = {"name": "weather", "url": remote.url, "headers": {"Authorization": "Bearer wrong"}}
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"cli": channel},
        agents=[{"id": "assistant", "mcp_servers": [server]}],
    )
    async with running(orchestrator):
        await channel.push("assistant", "hello")
        await channel.wait_sent(1)
    assert channel.texts_to("assistant") == ["echo: hello"]
    assert not any(t["name"].startswith("weather__") for t in fake_model.requests[0]["tools"])


@pytest.mark.parametrize(("choice", "called"), [("Allow", True), ("Deny", False)])
async def test_with_mcp_in_approvals_ask_a_remote_call_waits_for_the_tap(
    orchestrator_factory: Callable[..., Orchestrator],
    remote: RemoteMcp,
    tmp_path: Path,
    choice: str,
    called: bool,
) -> None:
    """The remote call is an action that leaves the sandbox: with `ask: [mcp]` the card shows
    the exact call, and the server hears of it only after Allow."""
    channel = MemoryChannel(name="cli")
    server = {"name": "weather", "url": remote.url, "headers": {"Authorization": f"Bearer {TOKEN}"}}
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"cli": channel},
        agents=[{"id": "assistant", "mcp_servers": [server], "approvals": {"ask": ["mcp"]}}],
    )
    async with running(orchestrator):
        await channel.push("assistant", tool("weather__forecast", city="Paris"))
        await channel.wait_sent(1)
        card = channel.sent[0].message
        assert "weather__forecast" in card.text and "Paris" in card.text
        assert remote.calls == []  # nothing reached the server before the decision
        (button,) = [b for b in card.buttons if b.label == choice]
        await channel.push("assistant", button.data)
        await until(
            lambda: any("Sunny" in t or "not called" in t for t in channel.texts_to("assistant")),
            what="the tool's outcome in the answer",
        )
    answers = "\n".join(channel.texts_to("assistant"))
    assert remote.calls == ([("forecast", {"city": "Paris"})] if called else [])
    assert ("Sunny in Paris, 21 C" in answers) is called
