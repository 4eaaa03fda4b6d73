"""Pairings: the config's are restored at every start, the ones made at runtime are kept."""

from __future__ import annotations

from pathlib import Path

from clawpen.store import SQLiteStore

from .support import NOW


async def test_config_pairings_are_restored_at_start_and_runtime_pairings_kept(
    db_path: Path,
) -> None:
    store = SQLiteStore(db_path)
    await store.sync_config_pairings({"telegram:1": "assistant"}, NOW)
    await store.pair("telegram:2", "helper", NOW)
    await store.unpair("telegram:1")
    assert await store.pairings() == {"telegram:2": "helper"}
    await store.close()
    reopened = SQLiteStore(db_path)
    await reopened.sync_config_pairings({"telegram:1": "assistant"}, NOW)  # the next start
    assert await reopened.pairings() == {"telegram:1": "assistant", "telegram:2": "helper"}
    await reopened.close()
