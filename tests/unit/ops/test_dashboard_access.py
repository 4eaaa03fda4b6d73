"""Who may use the dashboard: the token opens it, the cookie it becomes lets the page read,
and a change needs the CSRF header too; without them, nothing of the orchestrator shows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from typer.testing import CliRunner

from clawpen.app import Orchestrator
from clawpen.cli.main import app as cli_app
from clawpen.models import Address
from clawpen.security.webauth import COOKIE, CSRF_HEADER, csrf_for
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.fake_runtime import FakeRuntime
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

TELEGRAM = {"cli": {}, "telegram": {"token": "123:abc"}}


@pytest.fixture
async def dashboard(
    orchestrator_factory: Callable[..., Orchestrator],
) -> AsyncIterator[tuple[Orchestrator, str, MemoryChannel]]:
    channel = MemoryChannel()
    orchestrator = orchestrator_factory(
        FakeRuntime(),
        channels={"telegram": channel},
        config_channels=TELEGRAM,
        dashboard={"port": 0},
        pairings=[{"channel": "telegram:42", "agent": "assistant"}],
    )
    async with running(orchestrator):
        assert orchestrator.dashboard is not None
        yield orchestrator, f"http://127.0.0.1:{orchestrator.dashboard.port}", channel


async def test_without_the_token_nothing_of_the_orchestrator_shows(
    dashboard: tuple[Orchestrator, str, MemoryChannel],
) -> None:
    _orchestrator, url, channel = dashboard
    await channel.push("42", "a private message")
    async with httpx.AsyncClient(base_url=url) as client:
        answers = [
            await client.get("/"),
            await client.get("/?token=wrong-token-of-some-length"),
            await client.get("/api/overview"),
            await client.get("/api/events"),
            await client.get("/static/app.js"),
            await client.post("/api/agents/assistant/stop"),
        ]
    async with httpx.AsyncClient(base_url=url, cookies={COOKIE: "forged"}) as forger:
        answers.append(await forger.get("/api/overview"))
    for answer in answers:
        assert answer.status_code == 401, answer.request.url
        assert "assistant" not in answer.text and "private" not in answer.text
    assert "clawpen dashboard" in answers[0].text  # the page says where the token comes from


async def test_the_token_link_becomes_a_cookie_and_leaves_the_address(
    dashboard: tuple[Orchestrator, str, MemoryChannel],
) -> None:
    orchestrator, url, _channel = dashboard
    token = orchestrator.http_token
    async with httpx.AsyncClient(base_url=url) as client:
        login = await client.get(f"/?token={token}")
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = await client.get("/")  # the client keeps the cookie, as a browser does
        overview = await client.get("/api/overview")
    assert page.status_code == 200 and "/static/app.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert [a["id"] for a in overview.json()["agents"]] == ["assistant"]


async def test_a_change_with_the_cookie_needs_the_csrf_header_from_the_same_origin(
    dashboard: tuple[Orchestrator, str, MemoryChannel],
) -> None:
    orchestrator, url, _channel = dashboard
    token = orchestrator.http_token
    pair = {"chat": "telegram:77", "agent": "assistant"}
    async with httpx.AsyncClient(base_url=url, cookies={COOKIE: token}) as client:
        no_header = await client.post("/api/pairings", json=pair)
        wrong = await client.post("/api/pairings", json=pair, headers={CSRF_HEADER: "0" * 64})
        elsewhere = await client.post(
            "/api/pairings",
            json=pair,
            headers={CSRF_HEADER: csrf_for(token), "Origin": "http://evil.example"},
        )
        assert Address("telegram", "77") not in orchestrator.intake.pairings
        ok = await client.post("/api/pairings", json=pair, headers={CSRF_HEADER: csrf_for(token)})
    assert [no_header.status_code, wrong.status_code, elsewhere.status_code] == [403, 403, 403]
    assert ok.status_code == 200
    assert orchestrator.intake.pairings[Address("telegram", "77")] == "assistant"


async def test_a_script_with_the_bearer_token_may_act_and_errors_say_why(
    dashboard: tuple[Orchestrator, str, MemoryChannel],
) -> None:
    orchestrator, url, channel = dashboard
    await channel.push("42", "start the agent")
    await channel.wait_sent(1)
    assert "assistant" in orchestrator.pool.containers
    auth = {"Authorization": f"Bearer {orchestrator.http_token}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as client:
        stopped = await client.post("/api/agents/assistant/stop")
        unknown = await client.post("/api/agents/nobody/stop")
        bad_pair = await client.post("/api/pairings", json={"chat": "nowhere", "agent": "x"})
    assert stopped.status_code == 200
    assert "assistant" not in orchestrator.pool.containers
    assert unknown.status_code == 400 and "nobody" in unknown.json()["error"]
    assert bad_pair.status_code == 400 and bad_pair.json()["error"]


async def test_a_page_on_another_host_name_is_refused_even_with_the_token(
    dashboard: tuple[Orchestrator, str, MemoryChannel],
) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 must not reach the dashboard."""
    orchestrator, url, _channel = dashboard
    auth = {"Authorization": f"Bearer {orchestrator.http_token}", "Host": "evil.example"}
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/api/overview", headers=auth)
    assert answer.status_code == 421


async def test_clawpen_dashboard_prints_the_address_with_its_token(
    dashboard: tuple[Orchestrator, str, MemoryChannel],
) -> None:
    import asyncio

    orchestrator, url, _channel = dashboard
    config = orchestrator.settings.data_dir.parent / "clawpen.yaml"
    config.write_text(f"data_dir: {orchestrator.settings.data_dir}\n")
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["dashboard", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert f"{url}/?token={orchestrator.http_token}" in result.output
    # and the token stays the same across restarts: a bookmark keeps working
    assert (orchestrator.settings.data_dir / "http.token").stat().st_mode & 0o777 == 0o600


async def test_a_pending_approval_is_listed_and_decided_only_with_the_csrf_header(
    orchestrator_factory: Callable[..., Orchestrator], fake_telegram: FakeTelegram
) -> None:
    """Approvals on the dashboard: listed while pending; deciding is a change like the others
    (the cookie alone, or a page elsewhere, decides nothing)."""
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        dashboard={"port": 0},
        agents=[{"id": "assistant", "approvals": {"ask": ["send_message"]}}],
        pairings=[
            {"channel": "telegram:1001", "agent": "assistant"},
            {"channel": "telegram:2002", "agent": "assistant"},
        ],
    )
    text = json.dumps({"to": "telegram:2002", "text": "hi bob"})
    async with running(orchestrator):
        assert orchestrator.dashboard is not None
        url = f"http://127.0.0.1:{orchestrator.dashboard.port}"
        token = orchestrator.http_token
        await fake_telegram.push_text(1001, f"tool: send_message {text}")
        await until(lambda: orchestrator.store.approvals(), what="a pending request")
        async with httpx.AsyncClient(base_url=url, cookies={COOKIE: token}) as client:
            [shown] = (await client.get("/api/overview")).json()["approvals"]
            path = f"/api/approvals/{shown['id']}/allow"
            no_header = await client.post(path)
            elsewhere = await client.post(
                path, headers={CSRF_HEADER: csrf_for(token), "Origin": "http://evil.example"}
            )
            assert (await orchestrator.store.approvals())[0].status == "pending"
            ok = await client.post(path, headers={CSRF_HEADER: csrf_for(token)})
            again = await client.post(path, headers={CSRF_HEADER: csrf_for(token)})
            await until(lambda: fake_telegram.texts_to(2002), what="the message to bob")
            after = (await client.get("/api/overview")).json()["approvals"]
        [decided] = await orchestrator.store.approvals(pending_only=False)
    assert shown["kind"] == "send_message" and "telegram:2002" in shown["summary"]
    assert [no_header.status_code, elsewhere.status_code] == [403, 403]
    assert ok.status_code == 200
    assert again.status_code == 400 and "already" in again.json()["error"]
    assert after == []
    assert (decided.status, decided.decided_by, decided.how) == (
        "allowed",
        "dashboard",
        "dashboard",
    )
