"""The file: WAL mode, migrations run once, an old store keeps its work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clawpen.store import SQLiteStore
from clawpen.store.migrations import MIGRATIONS

from .support import ME, NOW, msg, record


async def test_database_is_in_wal_mode(store: SQLiteStore, db_path: Path) -> None:
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        other.close()


async def test_reopening_does_not_rerun_migrations(db_path: Path) -> None:
    first = SQLiteStore(db_path)
    await record(first, msg("before the restart"))
    await first.close()
    again = SQLiteStore(db_path)  # a migration run again would fail (CREATE TABLE) or lose rows
    try:
        task = await again.claim_next_task("assistant", ME, NOW)
        assert task is not None
        assert task.texts == ("before the restart",)
    finally:
        await again.close()
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    raw.close()


async def test_a_store_from_before_addresses_keeps_its_work_and_drops_strangers_text(
    db_path: Path,
) -> None:
    old = sqlite3.connect(db_path, isolation_level=None)
    for script in MIGRATIONS[:4]:
        old.executescript(script)
    old.execute("PRAGMA user_version=4")
    old.execute(
        "INSERT INTO messages (channel, chat_id, sender_id, platform_id, text, received_at,"
        " status, agent_id) VALUES ('telegram', '1001', 'u', '5', 'queued one', 1, 'queued',"
        " 'assistant')"
    )
    old.execute(
        "INSERT INTO messages (channel, chat_id, sender_id, platform_id, text, received_at,"
        " status, reason) VALUES ('telegram', '666', 'x', '6', 'secret text', 2, 'rejected',"
        " 'not paired')"
    )
    old.close()
    store = SQLiteStore(db_path)
    try:
        task = await store.claim_next_task("assistant", ME, NOW)
        assert task is not None
        assert task.texts == ("queued one",)
        assert (await store.counts())["strangers"] == 1
    finally:
        await store.close()
    raw = sqlite3.connect(db_path)
    assert "secret text" not in [r[0] for r in raw.execute("SELECT text FROM messages")]
    raw.close()
