"""The agent's own state in real containers: memory and the chat's session outlive container
and orchestrator restarts; /new, /stop and /usage work from Telegram."""

from __future__ import annotations

import asyncio
from typing import Any

from clawpen.demo.model import FakeModel
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running
from .conftest import DockerOrchestratorFactory


def user_texts(request: dict[str, Any]) -> list[str]:
    texts = []
    for message in request["messages"]:
        content = message["content"]
        if message["role"] != "user":
            continue
        if isinstance(content, str):
            texts.append(content)
        elif content and content[0].get("type") == "text":
            texts.append(content[0]["text"])
    return texts


async def test_memory_and_session_survive_container_and_orchestrator_restarts(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    orchestrator, _ = docker_orchestrator_factory(fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "remember: colour = green")
        await fake_telegram.wait_for_sent(1, timeout=60)
        await orchestrator.pool.stop("assistant", "test: a new container")
        await fake_telegram.push_text(1001, "recall: colour")
        await fake_telegram.wait_for_sent(2, timeout=60)
    again, _ = docker_orchestrator_factory(fake_telegram)  # same data_dir, same volume
    async with running(again):
        await fake_telegram.push_text(1001, "recall: colour")
        await fake_telegram.wait_for_sent(3, timeout=60)
    texts = fake_telegram.texts_to(1001)
    assert texts[0] == "tool said:\nremembered 'colour'"
    assert texts[1] == texts[2] == "tool said:\ngreen"
    # the conversation went on where it was: the last turn carried the earlier ones
    last_turn = fake_model.requests[-2]  # the turn's first call (the last one answers the tool)
    assert user_texts(last_turn) == ["remember: colour = green", "recall: colour", "recall: colour"]


async def test_new_stop_and_usage_from_telegram(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    orchestrator, _ = docker_orchestrator_factory(fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "/usage")
        await fake_telegram.wait_for_sent(1, timeout=60)
        await fake_telegram.push_text(1001, "my name is Ada")
        await fake_telegram.wait_for_sent(2, timeout=60)

        await fake_telegram.push_text(1001, "run: sleep 120")
        async with asyncio.timeout(60):
            while "assistant" not in orchestrator.board.running:
                await asyncio.sleep(0.05)
        await fake_telegram.push_text(1001, "/stop")
        await fake_telegram.wait_for_sent(4, timeout=60)  # long before the sleep would end

        await fake_telegram.push_text(1001, "/new")
        await fake_telegram.wait_for_sent(5, timeout=60)
        await fake_telegram.push_text(1001, "who am I?")
        await fake_telegram.wait_for_sent(6, timeout=60)
        await fake_telegram.push_text(1001, "/usage")
        await fake_telegram.wait_for_sent(7, timeout=60)
    texts = fake_telegram.texts_to(1001)
    assert texts[0] == "Today (UTC) assistant has used no tokens."
    assert texts[1] == "echo: my name is Ada"
    assert sorted(texts[2:4]) == sorted(
        ["Stopping what I was doing.", "Sorry, I could not answer that: you stopped it with /stop"]
    )
    assert texts[4].startswith("Started a new conversation")
    assert texts[5] == "echo: who am I?"
    assert " model calls" in texts[6] and "has used no tokens" not in texts[6]
    assert user_texts(fake_model.requests[-1]) == ["who am I?"]  # Ada was forgotten
    commands = ("/usage", "/stop", "/new")
    assert not any(c in str(r["messages"]) for r in fake_model.requests for c in commands)
