"""Platform failures and limits, end to end with in-process agents: replies arrive exactly once."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.channels.base import MAX_ATTACHMENT_BYTES
from clawpen.demo.model import FakeModel
from clawpen.errors import DockerUnavailable
from clawpen.models import Address, InboundMessage
from clawpen.runtime.base import AgentSpec
from clawpen.runtime.inprocess import InProcessRuntime
from tests.conftest import running, settled
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until


async def test_reply_survives_429_and_500_from_telegram_and_arrives_once(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    fake_telegram.fail_next("sendMessage", 429, retry_after=1)
    fake_telegram.fail_next("sendMessage", 500, times=2)
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "through the storm")
        await fake_telegram.wait_for_sent(1, timeout=30)
        await settled(orchestrator)  # recorded as sent: no retry can follow
    assert fake_telegram.texts_to(1001) == ["echo: through the storm"]
    assert fake_telegram.calls.count("sendMessage") == 4


async def test_getupdates_errors_are_retried_without_losing_messages(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    fake_telegram.fail_next("getUpdates", 502, times=2)
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    await fake_telegram.push_text(1001, "sent while telegram was flaky")
    async with running(orchestrator):
        await fake_telegram.wait_for_sent(1, timeout=30)
    assert fake_telegram.texts_to(1001) == ["echo: sent while telegram was flaky"]


async def test_long_reply_is_split_into_telegram_sized_messages_in_order(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    long_text = "\n".join(f"line {i:05d} " + "x" * 60 for i in range(200))  # ~14 KB
    async with running(orchestrator):
        await fake_telegram.push_text(1001, long_text)
        sent = await fake_telegram.wait_for_sent(4, timeout=30)
    assert all(len(m["text"]) <= 4096 for m in sent)
    assert "\n".join(m["text"] for m in sent) == "echo: " + long_text


async def test_messages_sent_while_the_agent_works_are_batched_into_its_next_turn(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: sleep 1; echo first-done")
        # the first message is in the agent's hands: its task asked the model
        await until(lambda: fake_model.requests, what="the first task's model call")
        for text in ("second", "third", "fourth"):
            await fake_telegram.push_text(1001, text)
        await fake_telegram.wait_for_sent(2, timeout=30)
    first, batch = fake_telegram.texts_to(1001)
    assert "first-done" in first
    assert batch == "echo: [1001] second\n[1001] third\n[1001] fourth"


async def test_container_cap_stops_the_least_recently_used_idle_agent(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        max_containers=1,
        agents=[{"id": "assistant"}, {"id": "helper"}],
        pairings=[
            {"channel": "telegram:1001", "agent": "assistant"},
            {"channel": "telegram:1002", "agent": "helper"},
        ],
    )
    running_counts: list[int] = []
    async with running(orchestrator):
        for i, chat in enumerate((1001, 1002, 1001, 1002)):
            await fake_telegram.push_text(chat, f"turn {i}")
            await fake_telegram.wait_for_sent(i + 1, timeout=30)
            running_counts.append(len(orchestrator.pool.containers))
    assert fake_telegram.texts_to(1001) == ["echo: turn 0", "echo: turn 2"]
    assert fake_telegram.texts_to(1002) == ["echo: turn 1", "echo: turn 3"]
    assert running_counts == [1, 1, 1, 1]


async def test_duplicate_platform_message_is_answered_once(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "only once")
        await fake_telegram.wait_for_sent(1, timeout=30)
        # Telegram hands out the same update again (as after a lost acknowledgement)
        fake_telegram.updates.append(
            {
                **fake_telegram.sent[0],
                "update_id": 99,
                "message": {**_last_update_message(fake_telegram)},
            }
        )
        async with fake_telegram._changed:
            fake_telegram._changed.notify_all()
        # the adapter confirmed it (Telegram forgets what is confirmed), then it all settled
        await until(lambda: not fake_telegram.updates, what="the repeated update confirmed")
        await settled(orchestrator)
    assert fake_telegram.texts_to(1001) == ["echo: only once"]


def _last_update_message(telegram: FakeTelegram) -> dict[str, object]:
    return {
        "message_id": 1,
        "date": 0,
        "text": "only once",
        "chat": {"id": 1001, "type": "private"},
        "from": {"id": 1001, "is_bot": False, "first_name": "u"},
    }


async def test_oversized_message_from_a_paired_chat_is_answered_not_dropped(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        # Telegram caps messages at 4096 characters; other ways in (the CLI, later platforms)
        # do not, so the orchestrator sees one as it would arrive from them.
        message = InboundMessage(Address("telegram", "1001"), "1001", "y" * 40_000, "big-1", 0.0)
        await orchestrator.intake.accept(message)
        await fake_telegram.wait_for_sent(1)
    (answer,) = fake_telegram.texts_to(1001)
    assert answer.startswith("Your message has 40000 characters; I take at most 32000.")
    assert fake_model.requests == []


class FailingStart(InProcessRuntime):
    """A runtime whose every start raises ``error``."""

    def __init__(self, workspace_root: Path, error: Exception) -> None:
        super().__init__(workspace_root)
        self.error = error

    async def start(self, spec: AgentSpec) -> str:
        raise self.error


@pytest.mark.parametrize(
    ("error", "answer"),
    [
        pytest.param(
            DockerUnavailable("the Docker engine failed (ConnectionError)", "start dockerd"),
            "Sorry, I could not answer that: the agent failed 3 times on this (the Docker engine"
            " failed (ConnectionError); start dockerd)",
            id="docker-down-retried-then-reported",
        ),
        pytest.param(
            KeyError("a bug"),
            "Sorry, I could not answer that: internal error (KeyError); see the orchestrator's log",
            id="a-bug-costs-one-answer",
        ),
    ],
)
async def test_failure_to_start_an_agent_is_told_and_the_orchestrator_carries_on(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    tmp_path: Path,
    error: Exception,
    answer: str,
) -> None:
    orchestrator = orchestrator_factory(FailingStart(tmp_path / "ws", error), fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "anyone home?")
        await fake_telegram.wait_for_sent(1, timeout=30)
        await fake_telegram.push_text(1001, "still nobody?")  # answered: still running
        await fake_telegram.wait_for_sent(2, timeout=30)
    assert fake_telegram.texts_to(1001) == [answer, answer]


async def test_a_photo_reaches_the_model_with_or_without_a_caption_and_a_huge_file_is_named(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    photo = b"\xff\xd8\xff a photo"
    seen = f"[image: image/jpeg, sha256 {hashlib.sha256(photo).hexdigest()[:12]}]"
    async with running(orchestrator):
        await fake_telegram.push_photo(1001, data=photo)
        await fake_telegram.wait_for_sent(1)
        await fake_telegram.push_photo(1001, caption="what is this?", data=photo)
        await fake_telegram.wait_for_sent(2)
        await fake_telegram.push_document(
            1001, "movie.mkv", "video/x-matroska", b"x", size=MAX_ATTACHMENT_BYTES + 1
        )
        await fake_telegram.wait_for_sent(3)
        await fake_telegram.push_photo(666)  # unpaired: still not a word to strangers
        await until(lambda: _strangers(orchestrator), what="the stranger's photo recorded")
        await settled(orchestrator)
    first, second, third = fake_telegram.texts_to(1001)
    assert seen in first and "/workspace/inbox/" in first
    assert second.startswith("echo: what is this?") and seen in second
    assert "movie.mkv: not downloaded, 20.0 MB is over the 20 MB limit" in third
    assert fake_telegram.texts_to(666) == []


async def test_a_chat_held_by_telegram_429s_for_10s_does_not_hold_up_another_chat(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    fake_telegram.fail_next("sendMessage", 429, retry_after=10, chat_id=1001)
    pairings = [
        {"channel": "telegram:1001", "agent": "assistant"},
        {"channel": "telegram:1002", "agent": "assistant"},
    ]
    orchestrator = orchestrator_factory(telegram=fake_telegram, pairings=pairings)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "held back")
        await until(lambda: "sendMessage" in fake_telegram.calls, timeout=5, what="the 429")
        held_at = asyncio.get_running_loop().time()
        for i in range(3):
            await fake_telegram.push_text(1002, f"go on {i}")
            await until(  # at once, whatever chat 1001 is waiting for
                lambda i=i: len(fake_telegram.texts_to(1002)) > i, timeout=3, what=f"go on {i}"
            )
        assert fake_telegram.texts_to(1001) == []
        await fake_telegram.wait_for_sent(4, timeout=20)
        waited = asyncio.get_running_loop().time() - held_at
    assert fake_telegram.texts_to(1001) == ["echo: held back"]
    assert fake_telegram.texts_to(1002) == [f"echo: go on {i}" for i in range(3)]
    assert waited >= 9.5  # Telegram's retry_after was honoured for that chat


async def _strangers(orchestrator: Orchestrator) -> int:
    return (await orchestrator.store.counts())["strangers"]
