"""Conversations in parallel in a real container (issue 24.5): while one chat's command runs,
another chat is answered; ``/stop`` in one chat ends that chat's command and no other, inside
the same container. Each long command waits for a file that another chat's shell creates, so
the test asserts what happened before what, never how long it took."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id
from tests.conftest import running
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from . import procs
from .conftest import DockerOrchestratorFactory
from .procs import write_config

pytestmark = pytest.mark.docker

CHATS = (1001, 1002, 1003)
# until no process in the container runs chat 1001's command ([1]: not this one's own)
GONE = "run: while grep -qs 'go-100[1]' /proc/[0-9]*/cmdline; do sleep 0.05; done; echo none-left"


def held(name: str) -> str:
    """Runs until ``go-NAME`` appears in the workspace; says it started with ``started-NAME``
    (the test reads it where the host mounts the workspace image)."""
    return (
        f"run: touch /workspace/started-{name}; until [ -e /workspace/go-{name} ];"
        f" do sleep 0.05; done; echo released-{name}"
    )


def tool_results(model: FakeModel, text: str) -> list[str]:
    """The tool results the model was shown, across all requests, that hold ``text``."""
    return [
        str(block.get("content"))
        for request in model.requests
        for message in request["messages"][-1:]  # each request's new turn only
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result" and text in str(block.get("content"))
    ]


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


async def test_kill_9_with_two_chats_at_work_reruns_both_and_answers_each_once(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
) -> None:
    """Both tasks were claimed (committed) and at work side by side when the orchestrator
    died: the agent gives up what the dead one handed out, the next one runs both again, and
    each chat gets one answer."""
    config = write_config(tmp_path / "clawpen.yaml", fake_model.url, fake_telegram, CHATS)
    cleanup_instance.append(instance_id(tmp_path / "data"))
    orchestrator = procs.Orchestrator(
        config, {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    )
    await orchestrator.start()
    await fake_telegram.push_text(1001, held("1001"))
    await fake_telegram.push_text(1002, held("1002"))

    workspace = tmp_path / "data" / "workspaces" / "assistant"  # the image's mount on the host
    await until(
        lambda: all((workspace / f"started-{chat}").exists() for chat in ("1001", "1002")),
        timeout=60,
        what="both chats' commands running",
    )
    assert await orchestrator.stop(signal.SIGKILL) == -signal.SIGKILL
    await orchestrator.start()
    await fake_telegram.push_text(1003, "run: touch /workspace/go-1001 /workspace/go-1002")
    await until(
        lambda: fake_telegram.texts_to(1001) and fake_telegram.texts_to(1002),
        timeout=90,
        what="both chats answered",
    )
    await orchestrator.stop()
    assert [len(fake_telegram.texts_to(chat)) for chat in (1001, 1002)] == [1, 1]
    assert "released-1001" in fake_telegram.texts_to(1001)[0]
    assert "released-1002" in fake_telegram.texts_to(1002)[0]
    resumed = {event["taskId"] for event in orchestrator.events("task_resumed")}
    assert len(resumed) == 2  # both claimed tasks ran again
    # the dead orchestrator's runs were given up in the container (their commands killed), so
    # only the re-runs reported to the model: one result each, and the lanes were free for them
    for chat in ("1001", "1002"):
        assert len(tool_results(fake_model, f"released-{chat}")) == 1, chat
