"""Slack end to end: the fake Slack on its real protocols, the adapter in its own process, real
agent containers. Every message a paired user sends is answered exactly once, where it was
asked, whatever Slack or the orchestrator's process does in between.

The fake model echoes each message (``echo: TEXT``), so each text must appear in exactly one
reply.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from clawpen.app import AdapterMode, Orchestrator
from clawpen.core import worker
from clawpen.demo.model import FakeModel
from clawpen.runtime.docker import DockerRuntime
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_slack import FakeSlack

from ..conftest import make_settings, running
from .procs import TEST_IMAGE
from .procs import Orchestrator as OrchestratorProcess

pytestmark = pytest.mark.docker

DM = "D0123ABCD"
OTHER_DM = "D0STRANGER"


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack(redeliver_after=3.0)
    await slack.start()
    yield slack
    await slack.close()


def slack_block(slack: FakeSlack) -> dict[str, Any]:
    return {
        "bot_token": slack.bot_token,
        "app_token": slack.app_token,
        "api_base_url": slack.url,
        "ping_interval": 1,
    }


SlackOrchestrator = Callable[..., Orchestrator]


@pytest.fixture
def slack_orchestrator(
    tmp_path: Path,
    fake_model: FakeModel,
    api_key: str,
    fake_slack: FakeSlack,
    docker_client: docker.DockerClient,
    agent_image: str,
    cleanup_instance: list[str],
) -> SlackOrchestrator:
    """An orchestrator with real containers, the CLI and Slack, ``slack:D0123ABCD`` paired."""

    def build(adapters: AdapterMode = "process", pairings: list[Any] | None = None) -> Orchestrator:
        data = tmp_path / "data"
        instance = instance_id(data)
        cleanup_instance.append(instance)
        settings = make_settings(
            data,
            fake_model,
            api_key,
            image=agent_image,
            channels={"cli": {}, "slack": slack_block(fake_slack)},
            pairings=[{"channel": f"slack:{DM}", "agent": "assistant"}, *(pairings or [])],
        )
        return Orchestrator.open(
            settings, runtime=DockerRuntime(docker_client, instance), adapters=adapters
        )

    return build


def answered(slack: FakeSlack, channel: str = DM) -> list[str]:
    """Every message text the user got back, one per line of the echoed replies (several
    messages may share one agent turn, one line each, ``[n] `` numbered)."""
    return [
        re.sub(r"^\[[^]]+\] ", "", line)
        for text in slack.texts_to(channel)
        for line in text.removeprefix("echo: ").splitlines()
    ]


async def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_a_direct_message_is_answered_in_its_conversation(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack
) -> None:
    orchestrator = slack_orchestrator()
    async with running(orchestrator):
        ts = await fake_slack.post_user_message(DM, "hello from slack")
        await fake_slack.wait_for_posted(1, timeout=60)
        await fake_slack.wait_for(lambda: fake_slack.acked(ts))
        status = await orchestrator.status()
    (reply,) = fake_slack.posted
    assert (reply["channel"], reply["text"], reply["thread_ts"]) == (
        DM,
        "echo: hello from slack",
        None,
    )
    assert status["channels"]["slack"]["state"] == "running"


async def test_a_thread_reply_is_answered_in_its_thread(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack
) -> None:
    orchestrator = slack_orchestrator()
    async with running(orchestrator):
        parent = await fake_slack.post_user_message(DM, "top level")
        await fake_slack.wait_for_posted(1, timeout=60)
        await fake_slack.post_user_message(DM, "in the thread", thread_ts=parent)
        await fake_slack.wait_for_posted(2, timeout=60)
    assert [(p["text"], p["thread_ts"]) for p in fake_slack.posted] == [
        ("echo: top level", None),
        ("echo: in the thread", parent),
    ]


async def test_an_unpaired_conversation_never_reaches_the_model(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack, fake_model: FakeModel
) -> None:
    orchestrator = slack_orchestrator()
    async with running(orchestrator):
        stranger = await fake_slack.post_user_message(OTHER_DM, "let me in", user="U0STRANGER")
        await fake_slack.wait_for(lambda: fake_slack.acked(stranger))  # committed, as metadata
        await fake_slack.post_user_message(DM, "paired")
        await fake_slack.wait_for_posted(1, timeout=60)
        counts = await orchestrator.store.counts()
    assert fake_slack.texts_to(OTHER_DM) == []  # strangers are never answered
    assert "let me in" not in str(fake_model.requests)
    assert "paired" in str(fake_model.requests)
    assert counts["strangers"] == 1


async def test_bot_messages_and_our_own_replies_are_not_tasks(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack, fake_model: FakeModel
) -> None:
    orchestrator = slack_orchestrator()
    async with running(orchestrator):
        await fake_slack.post_bot_message(DM, "another app talking")
        first = await fake_slack.post_user_message(DM, "one")
        await fake_slack.wait_for_posted(1, timeout=60)  # our reply comes back as an event
        await fake_slack.edit_message(DM, first, "one, edited")
        await fake_slack.post_user_message(DM, "two")
        await fake_slack.wait_for_posted(2, timeout=60)
        await fake_slack.wait_for(lambda: not fake_slack.pending)
        await asyncio.sleep(1)  # time for a wrong answer to show up
    assert fake_slack.texts_to(DM) == ["echo: one", "echo: two"]
    assert len(fake_model.requests) == 2


async def test_a_429_and_a_5xx_on_post_message_are_delivered_exactly_once(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("chat.postMessage", 429, retry_after=1)
    fake_slack.fail_next("chat.postMessage", 503)
    orchestrator = slack_orchestrator()
    async with running(orchestrator):
        await fake_slack.post_user_message(DM, "through the storm")
        await fake_slack.wait_for_posted(1, timeout=60)
        await asyncio.sleep(1.5)  # time for a double to show up
    assert fake_slack.calls.count("chat.postMessage") == 3
    assert fake_slack.texts_to(DM) == ["echo: through the storm"]


async def test_a_dropped_socket_reconnects_and_nothing_is_lost_or_doubled(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack
) -> None:
    orchestrator = slack_orchestrator()
    expected = [f"before {i}" for i in range(10)] + [f"after {i}" for i in range(10)]
    async with running(orchestrator):
        await fake_slack.wait_for_connections(1)
        for text in expected[:10]:
            await fake_slack.post_user_message(DM, text)
        await fake_slack.drop()  # mid-burst: some acknowledged, some not
        for text in expected[10:]:
            await fake_slack.post_user_message(DM, text)
        await fake_slack.wait_for_connections(2)
        await wait_until(lambda: len(answered(fake_slack)) >= len(expected), timeout=90)
        await fake_slack.wait_for(lambda: not fake_slack.pending)
        await asyncio.sleep(1.5)  # time for a double to show up
    assert sorted(answered(fake_slack)) == sorted(expected)


async def test_kill_9_of_the_orchestrator_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_slack: FakeSlack,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "\n".join(
            [
                "data_dir: ./data",
                f"image: {TEST_IMAGE}",
                "model:",
                "  name: claude-test",
                f"  base_url: {fake_model.url}",
                "  api_key: env:ANTHROPIC_API_KEY",
                "agents:",
                "  - id: assistant",
                "    system_prompt: You are a test.",
                "channels:",
                "  cli: {}",
                "  slack:",
                "    bot_token: env:SLACK_BOT_TOKEN",
                "    app_token: env:SLACK_APP_TOKEN",
                f"    api_base_url: {fake_slack.url}",
                "    ping_interval: 1",
                "pairings:",
                f"  - channel: slack:{DM}",
                "    agent: assistant",
            ]
        )
        + "\n"
    )
    cleanup_instance.append(instance_id(tmp_path / "data"))
    env = {
        "ANTHROPIC_API_KEY": api_key,
        "SLACK_BOT_TOKEN": fake_slack.bot_token,
        "SLACK_APP_TOKEN": fake_slack.app_token,
    }
    orchestrator = OrchestratorProcess(config, env)
    fake_model.delay = 0.3  # some thinking, so that the kill lands mid-task
    expected = [f"burst {i}" for i in range(20)]
    await orchestrator.start()
    await fake_slack.wait_for_connections(1)
    for text in expected[:10]:
        await fake_slack.post_user_message(DM, text)
    await wait_until(lambda: len(fake_model.requests) >= 1)  # the agent is at work
    for text in expected[10:]:
        await fake_slack.post_user_message(DM, text)
    assert await orchestrator.stop(signal.SIGKILL) == -signal.SIGKILL
    await orchestrator.start()
    await wait_until(lambda: len(answered(fake_slack)) >= len(expected), timeout=120)
    await fake_slack.wait_for(lambda: not fake_slack.pending, timeout=30)
    await asyncio.sleep(1.5)  # time for a double to show up
    await orchestrator.stop()
    assert sorted(answered(fake_slack)) == sorted(expected)
    assert fake_slack.connections >= 2  # the new adapter process connected again
    assert orchestrator.events("task_resumed")  # the kill did land mid-task
    # messages that were not yet committed when it died: Slack handed them out again
    assert any(
        d["retry_attempt"] > 0 and d["payload"]["event"].get("user") == "U0USER"
        for d in fake_slack.deliveries
    )


async def test_a_refused_app_token_disables_slack_with_one_line_and_the_cli_goes_on(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack
) -> None:
    orchestrator = slack_orchestrator()
    fake_slack.app_token = "xapp-rotated"  # the app token was regenerated: ours is refused
    async with running(orchestrator):
        async with asyncio.timeout(30):
            while orchestrator.channel_states["slack"].state != "disabled":
                await asyncio.sleep(0.05)
        assert orchestrator.cli is not None
        reply = await orchestrator.cli.ask("assistant", "still there?")
        status = await orchestrator.status()
    assert reply == "echo: still there?"
    assert status["channels"]["slack"] == {
        "state": "disabled",
        "error": "slack: the app token was refused (invalid_auth); check channels.slack.app_token",
        "sending": {"state": "closed", "failures": 0},
    }


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def test_an_image_sent_in_slack_reaches_the_model_and_typing_shows_meanwhile(
    slack_orchestrator: SlackOrchestrator,
    fake_slack: FakeSlack,
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "TYPING_AFTER", 0.0)  # show it at once: the fake is quick
    fake_model.delay = 0.5
    orchestrator = slack_orchestrator()
    async with running(orchestrator):
        photo = fake_slack.add_file("cat.png", PNG, "image/png")
        ts = await fake_slack.post_user_message(DM, "what is this?", files=[photo])
        await fake_slack.wait_for_posted(1, timeout=60)
        await wait_until(lambda: ("remove", DM, ts, "eyes") in fake_slack.reaction_calls)
    [reply] = fake_slack.texts_to(DM)
    assert f"[image: image/png, sha256 {hashlib.sha256(PNG).hexdigest()[:12]}]" in reply
    assert "/workspace/inbox/" in reply and "cat.png" in reply
    # the user saw the agent at work: a reaction on their message, gone with the answer
    assert ("add", DM, ts, "eyes") in fake_slack.reaction_calls
    assert fake_slack.reactions.get((DM, ts), set()) == set()


async def test_in_a_channel_only_mentions_reach_the_agent_unless_the_pairing_hears_all(
    slack_orchestrator: SlackOrchestrator, fake_slack: FakeSlack, fake_model: FakeModel
) -> None:
    orchestrator = slack_orchestrator(
        pairings=[
            {"channel": "slack:C0TEAM", "agent": "assistant"},
            {"channel": "slack:C0LOUD", "agent": "assistant", "mentions_only": False},
        ]
    )
    bot = fake_slack.bot_user_id
    async with running(orchestrator):
        await fake_slack.post_user_message("C0TEAM", "lunch anyone?", channel_type="channel")
        await fake_slack.post_user_message(
            "C0TEAM", f"<@{bot}> what is 2+2?", channel_type="channel"
        )
        await fake_slack.post_user_message("C0LOUD", "anyone here?", channel_type="channel")
        await fake_slack.wait_for_posted(2, timeout=60)
        await asyncio.sleep(1.0)  # time for a wrong answer to show up
    assert fake_slack.texts_to("C0TEAM") == ["echo: what is 2+2?"]
    assert fake_slack.texts_to("C0LOUD") == ["echo: anyone here?"]
    assert "lunch" not in str(fake_model.requests)
