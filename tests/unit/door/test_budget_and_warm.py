"""Per-agent token budgets and warm agents, through the whole in-process message path."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from tests.conftest import running
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until


async def test_agent_over_its_daily_budget_is_refused_and_the_user_told(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    api_key: str,
) -> None:
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        model={
            "name": "claude-test",
            "base_url": fake_model.url,
            "api_key": api_key,
            "daily_token_budget": 10_000,
        },
    )
    # earlier today it spent all but a few tokens of its budget
    await orchestrator.store.record_usage("assistant", "claude-test", 9_000, 990, time.time())
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "this one is over it")
        await fake_telegram.wait_for_sent(1)
    [reply] = fake_telegram.texts_to(1001)
    assert reply.startswith("Sorry, I could not answer that: model call failed: HTTP 403")
    assert "has used 9,990 of its 10,000 model tokens for today (UTC)" in reply
    assert "raise daily_token_budget or wait for tomorrow" in reply
    assert fake_model.requests == []  # the refused call never reached the upstream


async def test_warm_agent_is_running_before_its_first_message(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    orchestrator = orchestrator_factory(agents=[{"id": "assistant", "warm": True}])
    async with running(orchestrator):
        await until(
            lambda: orchestrator.pool.sessions["assistant"].connected,
            what="the warm agent connected",
        )
        assert "assistant" in orchestrator.pool.containers


async def test_an_agent_cannot_call_a_model_other_than_its_own(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel
) -> None:
    orchestrator = orchestrator_factory()
    socket_path = orchestrator.pool.sessions["assistant"].socket_path
    request = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with running(orchestrator):
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as agent:
            pricier = await agent.post("/v1/messages", json={**request, "model": "claude-opus"})
            own = await agent.post("/v1/messages", json={**request, "model": "claude-test"})
    assert pricier.status_code == 403
    assert pricier.json()["error"]["message"] == (
        "model 'claude-opus' is not allowed here (allowed: claude-test)"
    )
    assert own.status_code == 200
    assert [r["model"] for r in fake_model.requests] == ["claude-test"]
