"""Conversations in parallel in a real container (issue 24.5): while one chat's command runs,
another chat is answered; ``/stop`` in one chat ends that chat's command and no other, inside
the same container. Each long command waits for a file that another chat's shell creates, so
the test asserts what happened before what, never how long it took."""

from __future__ import annotations

import pytest

from clawpen.app import Orchestrator
from tests.conftest import running
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

CHATS = (1001, 1002, 1003)
# until no process in the container runs chat 1001's command ([1]: not this one's own)
GONE = "run: while grep -qs 'go-100[1]' /proc/[0-9]*/cmdline; do sleep 0.05; done; echo none-left"


def held(name: str) -> str:
    return f"run: until [ -e /workspace/go-{name} ]; do sleep 0.05; done; echo released-{name}"


def at_work(orchestrator: Orchestrator, chat: int) -> bool:
    return orchestrator.board.working_on("assistant", f"telegram:{chat}") is not None


async def test_chats_run_side_by_side_in_one_container_and_stop_alone(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_telegram: FakeTelegram
) -> None:
    orchestrator, _ = docker_orchestrator_factory(
        fake_telegram,
        pairings=[{"channel": f"telegram:{chat}", "agent": "assistant"} for chat in CHATS],
    )
    async with running(orchestrator):
        await fake_telegram.push_text(1001, held("1001"))
        await until(lambda: at_work(orchestrator, 1001), timeout=60, what="chat 1001 at work")
        await until(lambda: orchestrator.pool.containers, timeout=60, what="the container")
        container = orchestrator.pool.containers["assistant"]
        await fake_telegram.push_text(1003, held("1003"))
        await fake_telegram.push_text(1002, "hello")
        await until(lambda: fake_telegram.texts_to(1002), timeout=60, what="chat 1002 answered")
        assert at_work(orchestrator, 1001) and not fake_telegram.texts_to(1001)
        await until(lambda: at_work(orchestrator, 1003), timeout=60, what="chat 1003 at work")

        await fake_telegram.push_text(1001, "/stop")
        await until(
            lambda: len(fake_telegram.texts_to(1001)) == 2, timeout=30, what="chat 1001 stopped"
        )
        assert at_work(orchestrator, 1003) and not fake_telegram.texts_to(1003)

        # chat 1002's shell, in the same container, sees chat 1001's command gone (it waits
        # for that, up to the shell's own timeout), then lets chat 1003's command end
        await fake_telegram.push_text(1002, GONE)
        await until(lambda: len(fake_telegram.texts_to(1002)) == 2, what="chat 1002 looked")
        await fake_telegram.push_text(1002, "run: touch /workspace/go-1003")
        await until(lambda: fake_telegram.texts_to(1003), timeout=60, what="chat 1003 answered")
        assert orchestrator.pool.containers["assistant"] == container  # never restarted
    assert fake_telegram.texts_to(1002)[0] == "echo: hello"
    assert sorted(fake_telegram.texts_to(1001)) == sorted(
        ["Stopping what I was doing.", "Sorry, I could not answer that: you stopped it with /stop"]
    )
    assert "released-1003" in fake_telegram.texts_to(1003)[0]
    assert "exit_code: 0" in fake_telegram.texts_to(1002)[1]
    assert "none-left" in fake_telegram.texts_to(1002)[1]
