"""Spending that cannot run away: what may go upstream, a budget reserved before each call and
settled after it, and the chat told at 80% and past the limit."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.door.budget import Budget, Limits
from clawpen.door.modelrequest import AgentPolicy, beta_header, decide, estimate_input_tokens
from tests.conftest import running

POLICY = AgentPolicy(models=("claude-test",), max_tokens=4096)


def request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


# -- what may go upstream (pure) ----------------------------------------------------------------


def test_only_known_fields_go_upstream_and_a_huge_max_tokens_is_clamped() -> None:
    decision = decide(request(max_tokens=1_000_000_000, temperature=0.2, surprise={"x": 1}), POLICY)
    assert decision.refusal is None
    assert decision.body == request(max_tokens=4096, temperature=0.2)
    assert decision.dropped == ["surprise"]


@pytest.mark.parametrize(
    ("extra", "dropped"),
    [
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, ["mcp_servers"]),
        ({"container": "container_abc"}, ["container"]),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            ["tools.web_search"],
        ),
        (
            {"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]},
            ["tools.web_fetch"],
        ),
        (
            {"tools": [{"type": "code_execution_20250522", "name": "code_execution"}]},
            ["tools.code_execution"],
        ),
    ],
    ids=["mcp_servers", "container", "web_search", "web_fetch", "code_execution"],
)
def test_server_side_reach_is_dropped_unless_enabled(
    extra: dict[str, Any], dropped: list[str]
) -> None:
    decision = decide(request(**extra), POLICY)
    assert decision.dropped == dropped
    assert decision.body == request()
    enabled = AgentPolicy(
        models=("claude-test",),
        max_tokens=4096,
        server_tools=frozenset({"web_search", "web_fetch", "code_execution", "mcp_servers"}),
    )
    assert decide(request(**extra), enabled).body == request(**extra)


def test_custom_tools_stay_and_a_choice_of_a_dropped_tool_goes_with_it() -> None:
    shell = {"name": "shell", "description": "run", "input_schema": {"type": "object"}}
    search = {"type": "web_search_20250305", "name": "web_search"}
    decision = decide(
        request(tools=[shell, search], tool_choice={"type": "tool", "name": "web_search"}),
        POLICY,
    )
    assert decision.body["tools"] == [shell]
    assert "tool_choice" not in decision.body


def test_a_url_image_is_refused_unless_enabled() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://evil/?data=secret"}}
    payload = request(messages=[{"role": "user", "content": [image]}])
    refused = decide(payload, POLICY)
    assert refused.status == 403 and refused.refusal is not None
    assert "from a URL are not allowed" in refused.refusal
    allowed = AgentPolicy(("claude-test",), 4096, frozenset({"url_sources"}))
    assert decide(payload, allowed).refusal is None


def test_a_model_not_allowed_is_refused() -> None:
    decision = decide(request(model="claude-opus"), POLICY)
    assert decision.status == 403
    assert decision.refusal == "model 'claude-opus' is not allowed here (allowed: claude-test)"


def test_beta_headers_pass_only_when_listed() -> None:
    policy = AgentPolicy(("claude-test",), 4096, beta_headers=frozenset({"good-2025-01-01"}))
    assert beta_header("mcp-client-2025-04-04, good-2025-01-01", policy) == "good-2025-01-01"
    assert beta_header("mcp-client-2025-04-04", POLICY) is None


def test_the_input_estimate_is_above_what_text_costs_and_images_count_at_their_most() -> None:
    words = "lorem ipsum dolor sit amet " * 400
    assert estimate_input_tokens(request(messages=[{"role": "user", "content": words}])) > (
        len(words) / 3
    )
    image = {"type": "image", "source": {"type": "base64", "data": "A" * 2_000_000}}
    with_image = request(messages=[{"role": "user", "content": [image]}])
    assert 1600 <= estimate_input_tokens(with_image) < 2000  # not a token per base64 byte


# -- the ledger -----------------------------------------------------------------------------------


async def test_reservations_add_up_so_parallel_calls_cannot_overspend() -> None:
    budget = Budget(lambda agent, model: Limits(tokens=10_000))
    got = await asyncio.gather(*(budget.reserve("a", "m", 1_000, 4_096) for _ in range(40)))
    granted = [r for r in got if not isinstance(r, str)]
    assert sum(r.tokens for r in granted) <= 10_000
    assert len(granted) == 2  # 5,096, then 4,904 (clamped); then nothing is left
    assert [r.max_tokens for r in granted][:2] == [4_096, 3_904]
    refusals = [r for r in got if isinstance(r, str)]
    assert "too little is left for this call" in refusals[0]


async def test_settling_replaces_the_reservation_with_the_real_usage() -> None:
    budget = Budget(lambda agent, model: Limits(tokens=10_000))
    reservation = await budget.reserve("a", "m", 1_000, 4_096)
    assert not isinstance(reservation, str)
    charge = budget.settle(reservation, 700, 50, known=True)
    assert (charge.input_tokens, charge.output_tokens, charge.estimated) == (700, 50, False)
    assert budget.spent("a") == (750, 0.0)
    again = await budget.reserve("a", "m", 1_000, 4_096)
    assert not isinstance(again, str) and again.max_tokens == 4_096  # the hold was given back


async def test_unknown_usage_is_charged_at_the_reservation() -> None:
    budget = Budget(lambda agent, model: Limits(tokens=100_000, usd=10, price_out=15, price_in=3))
    reservation = await budget.reserve("a", "m", 1_000, 4_096)
    assert not isinstance(reservation, str)
    charge = budget.settle(reservation, 321, 0, known=False)
    assert (charge.input_tokens, charge.output_tokens, charge.estimated) == (1_000, 4_096, True)
    assert charge.usd == pytest.approx((1_000 * 3 + 4_096 * 15) / 1e6)


async def test_a_dollar_budget_clamps_max_tokens_to_what_is_left() -> None:
    limits = Limits(usd=0.10, price_in=3.0, price_out=15.0)  # $ per million tokens
    budget = Budget(lambda agent, model: limits)
    first = await budget.reserve("a", "m", 10_000, 8_000)  # $0.03 in + at most $0.12 out
    assert not isinstance(first, str)
    assert first.max_tokens == 4_666  # ($0.10 - $0.03) / $15 per million
    assert isinstance(await budget.reserve("a", "m", 10_000, 8_000), str)


async def test_the_warning_at_80_percent_comes_once_a_day() -> None:
    now = [1_800_000_000.0]
    budget = Budget(lambda agent, model: Limits(tokens=10_000), clock=lambda: now[0])
    warnings = []
    for used in (5_000, 3_100, 500, 100):
        reservation = await budget.reserve("a", "m", 100, 200)
        assert not isinstance(reservation, str)
        warnings.append(budget.settle(reservation, used, 0, known=True).warn)
    assert warnings[0] is None and warnings[2:] == [None, None]
    assert warnings[1] is not None and "has used 81% of today's budget" in warnings[1]
    now[0] += 86_400  # a new day, a new ledger
    reservation = await budget.reserve("a", "m", 100, 200)
    assert not isinstance(reservation, str)
    assert budget.settle(reservation, 8_500, 0, known=True).warn is not None


# -- through the orchestrator ---------------------------------------------------------------------


def attack_request(size: int) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 1_000_000_000,
        "messages": [{"role": "user", "content": "x" * size}],
    }


async def test_forty_parallel_calls_cannot_overspend_the_daily_budget(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, api_key: str
) -> None:
    budget = 200_000
    orchestrator = orchestrator_factory(
        model={
            "name": "claude-test",
            "base_url": fake_model.url,
            "api_key": api_key,
            "daily_token_budget": budget,
        },
        agents=[{"id": "assistant", "max_model_calls": 64}],
    )
    socket_path = orchestrator.pool.sessions["assistant"].socket_path
    async with running(orchestrator):
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://agent", timeout=30
        ) as agent:
            # each one says ~100 k tokens' worth of input (the fake counts a token per 4 bytes)
            calls = [agent.post("/v1/messages", json=attack_request(100_000)) for _ in range(40)]
            answers = await asyncio.gather(*calls)
        spent = await orchestrator.store.tokens_used_since("assistant", 0)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= 1
    assert statuses.count(403) >= 30
    assert spent <= budget
    assert all(r["max_tokens"] <= 4096 for r in fake_model.requests)


async def test_the_chat_is_warned_once_when_its_task_crosses_80_percent(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, api_key: str
) -> None:
    orchestrator = orchestrator_factory(
        model={
            "name": "claude-test",
            "base_url": fake_model.url,
            "api_key": api_key,
            "daily_token_budget": 100_000,
            "max_tokens": 1000,
        },
    )
    await orchestrator.store.record_usage("assistant", "claude-test", 78_000, 0, time.time())
    async with running(orchestrator):
        assert orchestrator.cli is not None
        first = await orchestrator.cli.ask("assistant", "y" * 8_000)  # ~4 k tokens: 82%
        second = await orchestrator.cli.ask("assistant", "and again")
    assert first.startswith("echo: yyy")
    assert (
        first.endswith("Past it, it cannot answer until tomorrow (UTC).")
        # the fake counts the whole prompt (tools and system too) as the API does: 82-84%
        and re.search(r"Note: assistant has used 8[234]% of today's budget", first)
    )
    assert second == "echo: and again"  # once, not on every reply
