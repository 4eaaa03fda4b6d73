"""MCP servers end to end with a real container: a stdio server written with the official SDK
runs inside the agent's container (no network there either), a streamable-HTTP server on
loopback is reached through the orchestrator; both servers' tools are listed and called as
SERVER__tool, and the remote server's credential is nowhere inside the container."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import docker
import pytest

from clawpen.demo.model import FakeModel
from clawpen.runtime.docker import container_name
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.mcp_servers import STDIO_SERVER, RemoteMcp

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

TOKEN = "mcp-remote-credential-9f8e7d6c5b4a"


@pytest.fixture
async def remote() -> AsyncIterator[RemoteMcp]:
    server = RemoteMcp(TOKEN)
    await server.start()
    yield server
    await server.close()


def tool(name: str, **args: object) -> str:
    return f"tool: {name} {json.dumps(args)}"


async def test_stdio_and_remote_mcp_tools_reach_the_agent_and_the_credential_stays_out(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    remote: RemoteMcp,
    docker_client: docker.DockerClient,
) -> None:
    servers = [
        {"name": "calc", "command": ["python3", "-c", STDIO_SERVER], "env": {"MODE": "test"}},
        {"name": "weather", "url": remote.url, "headers": {"Authorization": f"Bearer {TOKEN}"}},
    ]
    orchestrator, instance = docker_orchestrator_factory(
        fake_telegram, agents=[{"id": "assistant", "mcp_servers": servers}]
    )
    async with running(orchestrator):
        for answered, text in enumerate(
            (
                tool("calc__add", a=2, b=40),
                tool("calc__where"),
                tool("weather__forecast", city="Oslo"),
            ),
            start=1,
        ):
            await fake_telegram.push_text(1001, text)
            await fake_telegram.wait_for_sent(answered, timeout=120)
        container = docker_client.containers.get(container_name(instance, "assistant"))
        pattern = f"{TOKEN[:3]}[{TOKEN[3]}]{TOKEN[4:]}"
        search = (
            f"grep -l '{pattern}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null;"
            f" grep -r -l '{pattern}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null;"
            " echo searched"
        )
        found = container.exec_run(["sh", "-c", search], user="root").output.decode()
        attrs = container.attrs
    added, where, forecast = fake_telegram.texts_to(1001)
    assert "tool said:\n42" in added
    assert "uid=10001 network=unreachable" in where  # it ran in the container, offline
    assert "Sunny in Oslo, 21 C" in forecast and remote.calls == [("forecast", {"city": "Oslo"})]
    offered = {t["name"] for t in fake_model.requests[0]["tools"]}
    assert {"calc__add", "calc__where", "weather__forecast"} <= offered
    assert found.strip() == "searched"
    assert TOKEN not in json.dumps(attrs) and TOKEN not in json.dumps(fake_model.requests)
    assert remote.headers_seen and all(
        h.get("authorization") == f"Bearer {TOKEN}" for h in remote.headers_seen
    )
