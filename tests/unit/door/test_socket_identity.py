"""The socket is the identity: what arrives on one agent's socket can only touch that agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from clawpen.door.proxy import ModelProxy
from clawpen.door.server import AgentSession
from clawpen_agent.protocol import ChatLine, Task, TaskResult


async def no_usage(agent: str, model: str, input_tokens: int, output_tokens: int) -> None:
    pass


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[dict[str, AgentSession]]:
    upstream = aiohttp.ClientSession()
    proxy = ModelProxy(upstream, "http://127.0.0.1:9", "key", no_usage)
    pair = {name: AgentSession(name, tmp_path / name, proxy) for name in ("alice", "bob")}
    for session in pair.values():
        await session.start()
    yield pair
    for session in pair.values():
        await session.close()
    await upstream.close()


def client(session: AgentSession) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(session.socket_path))
    return httpx.AsyncClient(transport=transport, base_url="http://agent", timeout=5)


def task(task_id: int) -> Task:
    return Task(id=task_id, conversation="telegram:1", lines=[ChatLine("1", "hi")], model="m")


async def test_an_agent_cannot_answer_another_agents_task(
    sessions: dict[str, AgentSession],
) -> None:
    alice, bob = sessions["alice"], sessions["bob"]
    running = asyncio.create_task(alice.run(task(7), timeout=5))
    async with client(alice) as as_alice, client(bob) as as_bob:
        offered = await as_alice.get("/v1/tasks/next")
        assert offered.json()["id"] == 7
        forged = TaskResult(text="answer forged by bob").to_json()
        refused = await as_bob.post("/v1/tasks/7/result", content=forged)
        assert refused.status_code == 410
        honest = TaskResult(text="alice's answer").to_json()
        assert (await as_alice.post("/v1/tasks/7/result", content=honest)).status_code == 200
    assert (await running).text == "alice's answer"


async def test_a_task_is_offered_only_on_its_agents_socket(
    sessions: dict[str, AgentSession],
) -> None:
    alice, bob = sessions["alice"], sessions["bob"]
    running = asyncio.create_task(alice.run(task(8), timeout=5))
    async with client(bob) as as_bob:
        with pytest.raises(httpx.ReadTimeout):
            await as_bob.get("/v1/tasks/next", timeout=0.5)
    async with client(alice) as as_alice:
        offered = await as_alice.get("/v1/tasks/next")
        assert json.loads(offered.content)["id"] == 8
        await as_alice.post("/v1/tasks/8/result", content=TaskResult(text="ok").to_json())
    assert (await running).text == "ok"


async def test_each_agent_has_its_own_socket_directory(sessions: dict[str, AgentSession]) -> None:
    alice, bob = sessions["alice"], sessions["bob"]
    assert alice.socket_dir != bob.socket_dir
    assert list(alice.socket_dir.iterdir()) == [alice.socket_path]
    assert list(bob.socket_dir.iterdir()) == [bob.socket_path]


async def test_malformed_results_from_an_agent_are_refused_not_crashing(
    sessions: dict[str, AgentSession],
) -> None:
    alice = sessions["alice"]
    running = asyncio.create_task(alice.run(task(9), timeout=5))
    async with client(alice) as as_alice:
        await as_alice.get("/v1/tasks/next")
        for body in (b"not json", b'{"unexpected": 1}', b"[]"):
            assert (await as_alice.post("/v1/tasks/9/result", content=body)).status_code == 400
        assert (await as_alice.post("/v1/tasks/x/result", content=b"{}")).status_code == 400
        await as_alice.post("/v1/tasks/9/result", content=TaskResult(text="fine").to_json())
    assert (await running).text == "fine"


async def test_a_result_can_carry_the_agents_next_task_back_in_one_exchange(
    sessions: dict[str, AgentSession],
) -> None:
    alice = sessions["alice"]
    first = asyncio.create_task(alice.run(task(7), timeout=5))
    async with client(alice) as as_alice:
        assert (await as_alice.get("/v1/tasks/next")).json()["id"] == 7
        hand_in = asyncio.create_task(
            as_alice.post("/v1/tasks/7/result?next=1", content=TaskResult(text="one").to_json())
        )
        assert (await first).text == "one"  # the result counts at once
        assert not hand_in.done()  # while the answer waits for the next task
        second = asyncio.create_task(alice.run(task(8), timeout=5))
        answer = await hand_in
        assert answer.json()["id"] == 8
        await as_alice.post("/v1/tasks/8/result", content=TaskResult(text="two").to_json())
    assert (await second).text == "two"
