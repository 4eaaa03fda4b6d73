"""The claude-code engine in a real container: the Claude Agent SDK's CLI answers through the
orchestrator's model proxy (via the in-container loopback forwarder), holding no key."""

from __future__ import annotations

import json

import docker
import pytest

from clawpen.demo.model import FakeModel
from clawpen.runtime.docker import container_name
from clawpen.runtime.image import build_engine_image, engine_tag
from clawpen_agent.claude_engine import MCP_TOOLS, mcp_name
from clawpen_agent.tools import TOOL_SCHEMAS
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.mcp_servers import STDIO_SERVER, RemoteMcp

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def claude_code_image(docker_client: docker.DockerClient, agent_image: str) -> str:
    """The variant on the test's agent image (built once, then from the layer cache)."""
    build_engine_image(docker_client, "claude-code", tag=agent_image, progress=lambda _: None)
    return engine_tag(agent_image, "claude-code")


async def test_claude_code_engine_answers_through_the_proxy_with_no_key_inside(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    docker_client: docker.DockerClient,
    api_key: str,
    claude_code_image: str,
) -> None:
    agents = {"agents": [{"id": "assistant", "engine": "claude-code", "memory_mb": 1024}]}
    orchestrator, instance = docker_orchestrator_factory(fake_telegram, **agents)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "hello from the chat")
        await fake_telegram.wait_for_sent(1, timeout=60)
        container = docker_client.containers.get(container_name(instance, "assistant"))
        assert claude_code_image in container.image.tags  # (same image may carry other tags)
        pattern = f"{api_key[:3]}[{api_key[3]}]{api_key[4:]}"  # not grep's own argument
        search = (
            f"grep -l '{pattern}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null;"
            f" grep -r -l '{pattern}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null;"
            " echo searched"
        )
        found = container.exec_run(["sh", "-c", search], user="root").output.decode()
        attrs = container.attrs
    # the CLI's request reached the fake model through the proxy, which added the real key
    assert fake_model.requests, "the model was never called"
    assert all(h["x-api-key"] == api_key for h in fake_model.headers)
    tools = {t.get("name") for t in fake_model.requests[0].get("tools", [])}
    assert {"Bash", "Read"} <= tools  # Claude Code's own tools: the CLI made the call
    assert fake_telegram.texts_to(1001) == ["echo: hello from the chat"]
    assert found.strip() == "searched"
    assert api_key not in json.dumps(attrs)


async def test_claude_code_session_resumes_after_the_orchestrator_restarts(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    claude_code_image: str,
) -> None:
    agents = {"agents": [{"id": "assistant", "engine": "claude-code", "memory_mb": 1024}]}
    first, _ = docker_orchestrator_factory(fake_telegram, **agents)
    async with running(first):
        await fake_telegram.push_text(1001, "my name is Ada")
        await fake_telegram.wait_for_sent(1, timeout=60)
    # the container is gone with the orchestrator; the next one starts a new container
    second, _ = docker_orchestrator_factory(fake_telegram, **agents)
    async with running(second):
        await fake_telegram.push_text(1001, "what is my name?")
        await fake_telegram.wait_for_sent(2, timeout=60)
    said = json.dumps(fake_model.requests[-1]["messages"])
    assert "my name is Ada" in said and "echo: my name is Ada" in said  # the earlier turn
    assert fake_telegram.texts_to(1001)[-1] == "echo: what is my name?"


async def test_claude_code_reaches_clawpens_own_tools_through_its_mcp_server(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    claude_code_image: str,
) -> None:
    agents = {"agents": [{"id": "assistant", "engine": "claude-code", "memory_mb": 1024}]}
    orchestrator, _ = docker_orchestrator_factory(fake_telegram, **agents)
    turns = [
        'tool: mcp__clawpen__send_message {"text": "working on it"}',
        'tool: mcp__clawpen__memory_set {"key": "colour", "value": "green"}',
        'tool: mcp__clawpen__memory_get {"key": "colour"}',
        'tool: mcp__clawpen__schedule_job {"name": "standup", "task": "hi", "every": "1d"}',
    ]
    async with running(orchestrator):
        for sent, turn in zip([2, 3, 4, 5], turns, strict=True):  # the first sends two
            await fake_telegram.push_text(1001, turn)
            await fake_telegram.wait_for_sent(sent, timeout=60)
        jobs = await orchestrator.store.jobs("assistant")
    said = fake_telegram.texts_to(1001)
    # send_message went through /v1/outbox: in the chat before the answer of its turn
    assert said[:2] == ["working on it", "tool said:\nsent to telegram:1001"]
    assert said[2] == "tool said:\nremembered 'colour'"
    assert said[3] == "tool said:\ngreen"  # memory in /workspace, read back by the next turn
    assert said[4].startswith("tool said:\nscheduled standup")  # through /v1/jobs
    assert [job.spec.name for job in jobs] == ["standup"]
    # the CLI offered the model clawpen's tools, with the light engine's schemas
    offered = {t["name"]: t for t in fake_model.requests[0]["tools"]}
    light = {t["name"]: t for t in TOOL_SCHEMAS}
    for name in MCP_TOOLS:
        assert offered[mcp_name(name)]["input_schema"] == light[name]["input_schema"]


async def test_claude_code_reaches_the_operators_stdio_and_remote_mcp_servers(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    claude_code_image: str,
) -> None:
    """The CLI runs a stdio server itself, in the container; a remote one is reached through
    the door; both as the CLI names MCP tools, mcp__NAME__tool."""
    remote = RemoteMcp("engine-remote-credential-42")
    await remote.start()
    servers = [
        {"name": "calc", "command": ["python3", "-c", STDIO_SERVER]},
        {
            "name": "weather",
            "url": remote.url,
            "headers": {"Authorization": "Bearer engine-remote-credential-42"},
        },
    ]
    agent = {"id": "assistant", "engine": "claude-code", "memory_mb": 1024, "mcp_servers": servers}
    orchestrator, _ = docker_orchestrator_factory(fake_telegram, agents=[agent])
    try:
        async with running(orchestrator):
            await fake_telegram.push_text(1001, 'tool: mcp__calc__add {"a": 2, "b": 40}')
            await fake_telegram.wait_for_sent(1, timeout=90)
            await fake_telegram.push_text(1001, 'tool: mcp__weather__forecast {"city": "Rome"}')
            await fake_telegram.wait_for_sent(2, timeout=90)
    finally:
        await remote.close()
    added, forecast = fake_telegram.texts_to(1001)
    assert added in (
        "tool said:\n42",
        'tool said:\n{"result":42}',
    )  # the CLI may show it structured
    assert "Sunny in Rome, 21 C" in forecast
    offered = {t["name"] for t in fake_model.requests[0]["tools"]}
    assert {"mcp__calc__add", "mcp__weather__forecast"} <= offered
    assert "engine-remote-credential-42" not in json.dumps(fake_model.requests)
