"""What a platform says later about a reply is recorded against it, never moves back, and a
failure (a closed 24-hour window) reaches the operator in the log and in ``clawpen status``."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.models import DeliveryStatus
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.store.sqlite import SQLiteStore
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "clawpen.db")
    yield s
    await s.close()


def status_in(path: Path, platform_id: str) -> str:
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT status FROM delivery_statuses WHERE platform_id=?", (platform_id,)
        ).fetchone()
    return str(row[0])


@pytest.mark.parametrize(
    ("arrivals", "final"),
    [
        (["sent", "delivered", "read"], "read"),
        (["read", "delivered", "sent"], "read"),  # out of order: never moves back
        (["sent", "failed", "read"], "failed"),  # the platform's last word stays
        (["delivered", "failed"], "failed"),
    ],
)
async def test_statuses_only_move_forward(
    store: SQLiteStore, arrivals: list[str], final: str
) -> None:
    for i, state in enumerate(arrivals):
        await store.record_delivery_status("whatsapp", DeliveryStatus("1", "w1", state), i)
    assert status_in(store.path, "w1") == final


async def test_failures_are_counted_per_channel_with_the_last_error(store: SQLiteStore) -> None:
    await store.record_delivery_status("whatsapp", DeliveryStatus("1", "a", "failed", "old"), 1)
    await store.record_delivery_status("whatsapp", DeliveryStatus("2", "b", "failed", "new"), 2)
    await store.record_delivery_status("whatsapp", DeliveryStatus("2", "c", "read"), 3)
    assert await store.delivery_failures(0) == {"whatsapp": (2, "new")}
    assert await store.delivery_failures(1.5) == {"whatsapp": (1, "new")}


async def test_a_reply_the_platform_fails_later_shows_in_status(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}
    )
    async with running(orchestrator):
        await channel.push("assistant", "hello")
        await channel.wait_sent(1)
        sent_id = channel.sent[0].platform_id
        window = "Re-engagement message: more than 24 hours since the user wrote"
        await channel.report(DeliveryStatus("assistant", sent_id, "failed", window, True))
        status = await orchestrator.status()
    assert status["channels"]["cli"]["undelivered_24h"] == 1
    assert status["channels"]["cli"]["last_undelivered"] == window
    assert status_in(tmp_path / "data" / "clawpen.db", sent_id) == "failed"
