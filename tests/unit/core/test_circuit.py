"""A platform that keeps failing is left alone for a while, then tried once, then used again;
replies wait in order meanwhile and none is given up for the outage."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clawpen.channels.base import SendError
from clawpen.core.circuit import Circuit
from clawpen.core.outbox import MAX_ATTEMPTS
from clawpen.models import OutboundMessage
from clawpen.store.sqlite import SQLiteStore
from tests.fakes.fake_channel import MemoryChannel
from tests.waiting import until

from .test_outbox import all_sent, commit_reply, make_outbox, running, status_of


def test_opens_after_threshold_failures_in_a_row_and_success_resets() -> None:
    circuit = Circuit(threshold=3, cooldown=10)
    assert circuit.failure(0) is False
    circuit.success()
    assert [circuit.failure(t) for t in (1, 2, 3)] == [False, False, True]
    assert circuit.state(4) == "open" and circuit.wait(4) == 9
    assert circuit.state(13) == "half-open" and circuit.wait(13) == 0


def test_half_open_lets_one_trial_through_and_a_failed_trial_doubles_the_pause() -> None:
    circuit = Circuit(threshold=1, cooldown=10, max_cooldown=25)
    circuit.failure(0)
    circuit.begin(10)
    assert circuit.wait(10) > 0, "a second send went out beside the trial"
    assert circuit.failure(10) is True
    assert circuit.state(29) == "open" and circuit.state(30) == "half-open"
    circuit.begin(30)
    circuit.failure(30)
    assert circuit.open_for == 25  # capped
    circuit.success()
    assert circuit.state(31) == "closed" and circuit.describe(31) == {
        "state": "closed",
        "failures": 0,
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "clawpen.db")
    yield s
    await s.close()


async def test_an_outage_is_waited_out_and_every_reply_arrives_once_in_order(
    store: SQLiteStore,
) -> None:
    channel = MemoryChannel()
    failures = 7  # three open the circuit, then four failed trials
    channel.fail_next("1001", *[SendError("503 Service Unavailable") for _ in range(failures)])
    replies = [await commit_reply(store, f"answer {i}") for i in range(3)]
    outbox = make_outbox(store, channel)
    outbox.circuits["telegram"] = Circuit(threshold=3, cooldown=0.2, max_cooldown=0.4)
    async with running(outbox):
        await all_sent(store)
    assert channel.texts_to("1001") == ["answer 0", "answer 1", "answer 2"]
    times = [at for _, at in channel.attempts]
    # once open, nothing is sent until the pause is over
    assert times[3] - times[2] >= 0.2
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(times[2:8]))
    status, attempts, _ = await status_of(store, replies[0].id)
    assert status == "sent" and attempts < MAX_ATTEMPTS  # the outage did not use them up
    assert outbox.circuits["telegram"].state(0) == "closed"


async def test_a_platform_asking_us_to_slow_down_is_not_an_outage(store: SQLiteStore) -> None:
    channel = MemoryChannel()
    channel.fail_next("1001", *[SendError("429", retry_after=0) for _ in range(3)])
    await commit_reply(store)
    outbox = make_outbox(store, channel)
    outbox.circuits["telegram"] = Circuit(threshold=1, cooldown=60)
    async with running(outbox):
        await all_sent(store)
    assert channel.texts_to("1001") == ["echo: hi"]
    assert outbox.circuits["telegram"].opened_at is None


async def test_a_reply_the_adapter_cannot_build_never_opens_the_circuit_nor_holds_others(
    store: SQLiteStore,
) -> None:
    """Issue 23, item 2: an e-mail Subject that made the adapter raise opened the circuit, and
    the trial after each pause was always the same bad reply: another chat waited 8 minutes."""
    channel = MemoryChannel()

    async def send(message: OutboundMessage) -> str:
        if message.address.chat == "1001":
            raise ValueError("Header values may not contain linefeed or carriage return")
        return await plain_send(message)

    plain_send = channel.send
    channel.send = send  # type: ignore[method-assign]
    bad = await commit_reply(store, "cannot be built")
    outbox = make_outbox(store, channel)
    outbox.circuits["telegram"] = Circuit(threshold=1, cooldown=300)
    async with running(outbox):
        for n in range(3):  # answers to another chat keep arriving meanwhile
            await commit_reply(store, f"answer {n}", chat="2002")
            outbox.notify("telegram")
            await channel.wait_sent(n + 1)
    assert channel.texts_to("2002") == ["answer 0", "answer 1", "answer 2"]
    assert outbox.circuits["telegram"].state(0) == "closed"
    _, attempts, _ = await status_of(store, bad.id)
    assert attempts >= 1  # its own attempts are spent: it is given up after MAX_ATTEMPTS


async def test_the_trial_after_a_pause_goes_to_the_chat_tried_least_recently(
    store: SQLiteStore,
) -> None:
    channel = MemoryChannel()
    channel.fail_next("1001", *[SendError("503 Service Unavailable") for _ in range(50)])
    await commit_reply(store, "always refused")
    outbox = make_outbox(store, channel)
    # the pause outlasts the refused reply's own retry delay (at most 0.5 s): at every trial
    # it is due again, and it is the oldest
    outbox.circuits["telegram"] = Circuit(threshold=1, cooldown=0.6, max_cooldown=0.6)
    async with running(outbox):
        await until(lambda: channel.attempts, what="the refused send that opens the circuit")
        await commit_reply(store, "another chat", chat="2002")
        outbox.notify("telegram")
        await channel.wait_sent(1, timeout=10)
    assert channel.texts_to("2002") == ["another chat"]
    assert outbox.circuits["telegram"].state(0) == "closed"
