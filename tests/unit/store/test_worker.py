"""The store's threads: writes commit in the order asked, a bad write fails alone, a locked
database is unavailable rather than refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from clawpen.store import SQLiteStore, StoreRejected, StoreUnavailable

from .support import ME, NOW, ROUTED, msg


async def test_concurrent_writes_commit_together_in_the_order_they_were_asked(
    store: SQLiteStore, db_path: Path
) -> None:
    ids = await asyncio.gather(
        *(store.record_inbound(msg(f"m{i}", chat=str(i % 3)), ROUTED, ME, NOW) for i in range(300))
    )
    assert ids == sorted(ids)  # committed in the order asked, whatever the batching
    assert len(set(ids)) == 300
    raw = sqlite3.connect(db_path)
    texts = [r[0] for r in raw.execute("SELECT text FROM messages ORDER BY id")]
    raw.close()
    assert texts == [f"m{i}" for i in range(300)]


async def test_a_write_the_database_refuses_fails_alone_and_is_not_retried(
    store: SQLiteStore,
) -> None:
    good = store.record_inbound(msg("good"), ROUTED, ME, NOW)
    bad = store.record_inbound(msg(["a"]), ROUTED, ME, NOW)  # type: ignore[arg-type]
    surrogate = store.record_inbound(msg("\ud800", platform_id="s"), ROUTED, ME, NOW)
    after = store.record_inbound(msg("after"), ROUTED, ME, NOW)
    results = await asyncio.gather(good, bad, surrogate, after, return_exceptions=True)
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert isinstance(results[1], StoreRejected)
    assert isinstance(results[2], StoreRejected)
    assert "refused a write" in str(results[1])
    assert (await store.counts())["messages.queued"] == 2


async def test_a_locked_database_is_unavailable_not_refused(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    blocker = sqlite3.connect(db_path, timeout=0.1)
    blocker.execute("PRAGMA busy_timeout=0")
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        store._writer.db.execute("PRAGMA busy_timeout=50")
        with pytest.raises(StoreUnavailable, match="retries"):
            await store.record_inbound(msg("hi"), ROUTED, ME, NOW)
        blocker.execute("ROLLBACK")
        assert await store.record_inbound(msg("hi"), ROUTED, ME, NOW) is not None
    finally:
        blocker.close()
        await store.close()
