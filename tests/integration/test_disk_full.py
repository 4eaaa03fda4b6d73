"""A full disk under data_dir: nothing is acknowledged, nothing corrupts, and it all resumes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from clawpen.app import Orchestrator
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, so that filling it is quick."""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros until the filesystem refuses another byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


async def test_full_disk_holds_messages_unacknowledged_then_resumes_without_corruption(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    small_disk: Path,
) -> None:
    # no reserve: this is about the store meeting a disk that is really full (the guard that
    # refuses work before that happens is tested in tests/unit/test_operations.py)
    orchestrator = orchestrator_factory(telegram=fake_telegram, disk_reserve_mb=0)
    assert orchestrator.settings.data_dir == small_disk
    big = "x" * 20_000  # needs fresh pages in the WAL: cannot fit in space already allocated
    with structlog.testing.capture_logs() as logs:
        async with running(orchestrator):
            await fake_telegram.push_text(1001, "before")
            await fake_telegram.wait_for_sent(1)
            filler = fill(small_disk)
            await fake_telegram.push_text(1001, "during " + big)
            await asyncio.sleep(2.0)
            unacknowledged = [u["message"]["text"][:6] for u in fake_telegram.updates]
            replies_while_full = len(fake_telegram.sent)
            filler.unlink()
            await fake_telegram.wait_for_sent(6, timeout=30)  # 20 KB: five Telegram messages
            async with asyncio.timeout(10):
                while "replies.pending" in (counts := await orchestrator.store.counts()):
                    await asyncio.sleep(0.05)
    assert unacknowledged == ["during"]  # Telegram still holds it: nothing was lost
    assert replies_while_full == 1
    assert any(e["event"] == "store_unwritable" for e in logs)
    before, *during = fake_telegram.texts_to(1001)
    assert (before, "".join(during)) == ("echo: before", "echo: during " + big)
    assert counts == {
        "messages.answered": 2,
        "tasks.done": 2,
        "replies.sent": 2,
        "strangers": 0,
    }
    with sqlite3.connect(small_disk / "clawpen.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
