"""Crashes with real processes and containers: nothing accepted is lost, nothing is doubled.

The fake model echoes every message it is given, so each message text must appear in exactly
one reply the user received.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from clawpen.cli.views import render_status
from clawpen.demo.model import FakeModel
from clawpen.runtime.docker import container_name
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running
from .conftest import DockerOrchestratorFactory
from .procs import Orchestrator, write_config

pytestmark = pytest.mark.docker

CHATS = (1001, 1002, 1003, 1004)


def occurrences(telegram: FakeTelegram, text: str) -> int:
    return sum(sent["text"].count(text) for sent in telegram.sent)


async def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_kill_9_during_a_burst_loses_and_doubles_nothing(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
    docker_client: docker.DockerClient,
) -> None:
    config = write_config(tmp_path / "clawpen.yaml", fake_model.url, fake_telegram, CHATS)
    instance = instance_id(tmp_path / "data")
    cleanup_instance.append(instance)
    orchestrator = Orchestrator(
        config, {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    )
    fake_model.delay = 0.3  # some thinking, so that kills land mid-task too
    rng = random.Random(7)
    texts = []
    await orchestrator.start()
    for round_ in range(4):
        calls = len(fake_model.requests)
        for i in range(10):
            text = f"burst-{round_}-{i}"
            texts.append(text)
            await fake_telegram.push_text(CHATS[i % len(CHATS)], text)
        if round_ % 2 == 0:  # while the model thinks: a task is in flight
            await wait_until(lambda calls=calls: len(fake_model.requests) > calls)  # type: ignore[misc]
            await asyncio.sleep(0.05)
        else:  # before, during or after the work
            await asyncio.sleep(rng.uniform(0.05, 0.8))
        assert await orchestrator.stop(signal.SIGKILL) == -signal.SIGKILL
        await orchestrator.start()
    await wait_until(lambda: all(occurrences(fake_telegram, t) for t in texts), timeout=120)
    await asyncio.sleep(1.5)  # time for any duplicate to show up
    await orchestrator.stop()

    assert {t: occurrences(fake_telegram, t) for t in texts} == {t: 1 for t in texts}
    # the agent's container was adopted across the kills, never started twice at once
    assert orchestrator.events("task_resumed")  # some kills did land mid-task
    assert orchestrator.events("agent_adopted")
    assert (
        docker_client.containers.list(all=True, filters={"label": [f"clawpen.instance={instance}"]})
        == []
    )


async def test_killed_container_mid_task_is_restarted_and_the_task_answered_once(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    docker_client: docker.DockerClient,
) -> None:
    orchestrator, instance = docker_orchestrator_factory(fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: sleep 2; echo survived")
        await wait_until(lambda: len(fake_model.requests) >= 1)
        first = docker_client.containers.get(container_name(instance, "assistant"))
        first.kill()
        await fake_telegram.wait_for_sent(1, timeout=60)
        await asyncio.sleep(0.5)
        second = docker_client.containers.get(container_name(instance, "assistant"))
        counts = await orchestrator.store.counts()
    replies = fake_telegram.texts_to(1001)
    assert len(replies) == 1 and "survived" in replies[0]
    assert second.id != first.id
    assert counts == {
        "messages.answered": 1,
        "tasks.done": 1,
        "replies.sent": 1,
        "strangers": 0,
    }


async def test_task_that_keeps_crashing_its_agent_is_given_up_and_the_user_told(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator, _instance = docker_orchestrator_factory(fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: kill -9 $PPID")  # the agent kills itself
        await fake_telegram.wait_for_sent(1, timeout=60)
        await fake_telegram.push_text(1001, "are you back?")
        await fake_telegram.wait_for_sent(2, timeout=60)
    failure, after = fake_telegram.texts_to(1001)
    assert failure.startswith("Sorry, I could not answer that: the agent failed 3 times")
    assert after == "echo: are you back?"


async def test_out_of_memory_command_is_reported_and_the_agent_lives_on(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator, _instance = docker_orchestrator_factory(
        fake_telegram, agents=[{"id": "assistant", "memory_mb": 64}]
    )
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: python3 -c 'bytearray(300 * 1024 * 1024)'")
        await fake_telegram.wait_for_sent(1, timeout=60)
        await fake_telegram.push_text(1001, "still there?")
        await fake_telegram.wait_for_sent(2, timeout=60)
    oom, after = fake_telegram.texts_to(1001)
    assert "exit_code: 137" in oom and "Killed" in oom  # the OOM killer, inside the 64 MB limit
    assert after == "echo: still there?"


async def test_idle_agent_is_stopped_and_started_again_on_the_next_message(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    docker_client: docker.DockerClient,
) -> None:
    orchestrator, instance = docker_orchestrator_factory(
        fake_telegram, agents=[{"id": "assistant", "idle_timeout": 1}]
    )
    name = container_name(instance, "assistant")
    labels = {"label": [f"clawpen.instance={instance}"]}
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "first")
        await fake_telegram.wait_for_sent(1, timeout=60)
        assert docker_client.containers.get(name).status == "running"
        await wait_until(lambda: not docker_client.containers.list(all=True, filters=labels))
        await fake_telegram.push_text(1001, "second")
        await fake_telegram.wait_for_sent(2, timeout=60)
    assert fake_telegram.texts_to(1001) == ["echo: first", "echo: second"]


async def test_idle_agent_is_frozen_and_its_next_message_thaws_the_same_container(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    docker_client: docker.DockerClient,
) -> None:
    orchestrator, instance = docker_orchestrator_factory(
        fake_telegram, agents=[{"id": "assistant", "pause_after": 0.5, "idle_timeout": 600}]
    )
    name = container_name(instance, "assistant")
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "first")
        await fake_telegram.wait_for_sent(1, timeout=60)
        first = docker_client.containers.get(name).id
        await wait_until(lambda: "assistant" in orchestrator.pool.paused)
        assert docker_client.containers.get(name).status == "paused"  # frozen, not stopped
        status = await orchestrator.status()
        assert status["agents"]["assistant"]["paused"] is True
        assert re.search(r"^  assistant +paused ", render_status(status), re.M)  # clawpen status
        await fake_telegram.push_text(1001, "second")
        await fake_telegram.wait_for_sent(2, timeout=60)
        thawed = docker_client.containers.get(name)
        assert (thawed.id, thawed.status) == (first, "running")  # thawed, not started anew
        assert (await orchestrator.status())["agents"]["assistant"]["paused"] is False
    assert fake_telegram.texts_to(1001) == ["echo: first", "echo: second"]


async def test_a_container_frozen_when_the_orchestrator_died_is_thawed_and_adopted(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
    docker_client: docker.DockerClient,
) -> None:
    config = write_config(
        tmp_path / "clawpen.yaml",
        fake_model.url,
        fake_telegram,
        agent_lines=("pause_after: 0.5",),
    )
    instance = instance_id(tmp_path / "data")
    cleanup_instance.append(instance)
    name = container_name(instance, "assistant")
    orchestrator = Orchestrator(
        config, {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    )
    await orchestrator.start()
    await fake_telegram.push_text(1001, "before")
    await fake_telegram.wait_for_sent(1, timeout=60)
    frozen = docker_client.containers.get(name).id
    await wait_until(lambda: docker_client.containers.get(name).status == "paused")
    assert await orchestrator.stop(signal.SIGKILL) == -signal.SIGKILL
    await orchestrator.start()
    await fake_telegram.push_text(1001, "after")
    await fake_telegram.wait_for_sent(2, timeout=60)
    assert docker_client.containers.get(name).id == frozen  # adopted, not started again
    assert [e["container"] for e in orchestrator.events("agent_adopted")] == [frozen[:12]]
    await orchestrator.stop()
    assert fake_telegram.texts_to(1001) == ["echo: before", "echo: after"]
