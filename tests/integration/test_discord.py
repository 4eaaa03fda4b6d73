"""Discord end to end: the fake Discord on the wire, the adapter in its own process, real agent
containers, and the fake model, which answers ``echo: TEXT``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from clawpen.core import worker
from clawpen.demo.model import FakeModel
from tests.fakes.fake_discord import SEND_MESSAGE, FakeDiscord, FakeFile

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


def discord_orchestrator(
    factory: DockerOrchestratorFactory, fake: FakeDiscord, **overrides: Any
) -> Any:
    orchestrator, _ = factory(
        channels={
            "cli": {},
            "discord": {"token": fake.token, "api_base_url": fake.api_base_url},
        },
        pairings=[
            {"channel": f"discord:{fake.dm_channel_id}", "agent": "assistant"},
            *overrides.pop("more_pairings", []),
        ],
        **overrides,
    )
    return orchestrator


def answered_lines(fake: FakeDiscord, channel_id: str) -> list[str]:
    """Every message the agent answered, one per line (several may share one turn)."""
    return [
        re.sub(r"^\[\d+\] ", "", line)
        for reply in fake.texts_to(channel_id)
        for line in reply.removeprefix("echo: ").splitlines()
    ]


async def wait_until(condition: Callable[[], bool], timeout: float = 90) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_a_dm_gets_its_answer_from_an_agent_container(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_discord: FakeDiscord
) -> None:
    orchestrator = discord_orchestrator(
        docker_orchestrator_factory, fake_discord, adapters="process"
    )
    async with running(orchestrator):
        await fake_discord.wait_connected()
        await fake_discord.post_user_message(fake_discord.dm_channel_id, "hello", guild=False)
        await fake_discord.wait_for_sent(1, timeout=90)
        status = await orchestrator.status()
    assert fake_discord.texts_to(fake_discord.dm_channel_id) == ["echo: hello"]
    assert status["channels"]["discord"]["state"] == "running"
    assert "pid" in status["channels"]["discord"]  # in a process of its own


async def test_an_unpaired_channel_never_reaches_the_model(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_discord: FakeDiscord,
    fake_model: FakeModel,
) -> None:
    orchestrator = discord_orchestrator(docker_orchestrator_factory, fake_discord)
    async with running(orchestrator):
        await fake_discord.wait_connected()
        await fake_discord.post_user_message(
            fake_discord.channel_id, "the secret plan", mentions_bot=True
        )
        await fake_discord.post_user_message(fake_discord.dm_channel_id, "paired", guild=False)
        await fake_discord.wait_for_sent(1, timeout=90)
    assert fake_discord.texts_to(fake_discord.dm_channel_id) == ["echo: paired"]
    assert fake_discord.texts_to(fake_discord.channel_id) == []
    assert "the secret plan" not in json.dumps(fake_model.requests)


async def test_a_429_and_5xxs_on_send_are_delivered_exactly_once(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_discord: FakeDiscord
) -> None:
    orchestrator = discord_orchestrator(
        docker_orchestrator_factory, fake_discord, adapters="process"
    )
    async with running(orchestrator):
        await fake_discord.wait_connected()
        fake_discord.fail_next(SEND_MESSAGE, 429, retry_after=0.5)  # discord.py waits it out
        fake_discord.fail_next(SEND_MESSAGE, 500)  # discord.py tries again
        fake_discord.fail_next(SEND_MESSAGE, 503)  # a SendError: the core tries again
        await fake_discord.post_user_message(fake_discord.dm_channel_id, "persist", guild=False)
        await fake_discord.wait_for_sent(1, timeout=90)
        await wait_until(lambda: not fake_discord.failures[SEND_MESSAGE])
        await asyncio.sleep(1.0)  # time for a doubled send to show up
        counts = await orchestrator.store.counts()
    assert fake_discord.texts_to(fake_discord.dm_channel_id) == ["echo: persist"]
    posts = [
        c for c in fake_discord.calls if c.startswith("POST /channels/") and c.endswith("/messages")
    ]
    assert len(posts) == 4  # three refused, one delivered
    assert not counts.get("replies.pending")


async def test_a_dropped_gateway_resumes_without_losing_or_doubling_a_message(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_discord: FakeDiscord
) -> None:
    orchestrator = discord_orchestrator(
        docker_orchestrator_factory, fake_discord, adapters="process"
    )
    texts = [f"burst {i}" for i in range(12)]
    async with running(orchestrator):
        await fake_discord.wait_connected()
        for text in texts[:6]:
            await fake_discord.post_user_message(fake_discord.dm_channel_id, text, guild=False)
        fake_discord.resend_on_resume = 3  # and Discord replays some the client already had
        await fake_discord.drop_connection()
        for text in texts[6:]:
            await fake_discord.post_user_message(fake_discord.dm_channel_id, text, guild=False)
        await wait_until(
            lambda: (
                sorted(answered_lines(fake_discord, fake_discord.dm_channel_id)) == sorted(texts)
            )
        )
        await asyncio.sleep(1.5)  # time for any duplicate to show up
    assert sorted(answered_lines(fake_discord, fake_discord.dm_channel_id)) == sorted(texts)
    assert fake_discord.resumes == 1
    assert fake_discord.identifies == 1


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def test_an_image_reaches_the_model_and_in_a_guild_only_mentions_are_answered(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_discord: FakeDiscord,
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "TYPING_AFTER", 0.0)  # show it at once: the fake is quick
    fake_model.delay = 0.5
    guild_channel = f"discord:{fake_discord.channel_id}"
    orchestrator = discord_orchestrator(
        docker_orchestrator_factory,
        fake_discord,
        adapters="process",
        more_pairings=[{"channel": guild_channel, "agent": "assistant"}],
    )
    async with running(orchestrator):
        await fake_discord.wait_connected()
        await fake_discord.post_user_message(
            fake_discord.dm_channel_id,
            "what is this?",
            guild=False,
            attachments=[FakeFile("cat.png", "image/png", PNG)],
        )
        await fake_discord.post_user_message(fake_discord.channel_id, "lunch anyone?")
        await fake_discord.post_user_message(
            fake_discord.channel_id, "what is 2+2?", mentions_bot=True
        )
        await fake_discord.wait_for_sent(2, timeout=90)
        await asyncio.sleep(1.0)  # time for a wrong answer to show up
    [reply] = fake_discord.texts_to(fake_discord.dm_channel_id)
    assert f"[image: image/png, sha256 {hashlib.sha256(PNG).hexdigest()[:12]}]" in reply
    assert "cat.png" in reply
    assert fake_discord.texts_to(fake_discord.channel_id) == ["echo: what is 2+2?"]
    assert "lunch" not in str(fake_model.requests)
    assert any(c.endswith("/typing") for c in fake_discord.calls)  # the agent was seen at work


async def test_a_send_that_got_through_before_its_5xx_is_not_posted_twice(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_discord: FakeDiscord
) -> None:
    orchestrator = discord_orchestrator(
        docker_orchestrator_factory, fake_discord, adapters="process"
    )
    async with running(orchestrator):
        await fake_discord.wait_connected()
        # Discord stores the message, then the answer is lost: the core tries again with the
        # same nonce, and Discord hands back the message it has instead of posting another
        fake_discord.fail_next(SEND_MESSAGE, 503, after_store=True)
        await fake_discord.post_user_message(fake_discord.dm_channel_id, "once", guild=False)
        await wait_until(lambda: not fake_discord.failures[SEND_MESSAGE])
        await wait_until(lambda: len(fake_discord.calls_to(SEND_MESSAGE)) >= 2)
        await asyncio.sleep(1.0)  # time for a doubled post to show up
        counts = await orchestrator.store.counts()
    assert fake_discord.texts_to(fake_discord.dm_channel_id) == ["echo: once"]
    assert counts["replies.sent"] == 1
