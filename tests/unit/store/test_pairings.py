"""Pairings: the config's are restored at every start, the ones made at runtime are kept."""

from __future__ import annotations

from pathlib import Path

from clawpen.models import Address
from clawpen.store import SQLiteStore

from .support import NOW


async def test_config_pairings_are_restored_at_start_and_runtime_pairings_kept(
    db_path: Path,
) -> None:
    store = SQLiteStore(db_path)
    one, two = Address("telegram", "1"), Address("telegram", "2")
    await store.sync_config_pairings({one: "assistant"}, NOW)
    await store.pair(two, "helper", NOW)
    await store.unpair(one)
    assert await store.pairings() == {two: "helper"}
    await store.close()
    reopened = SQLiteStore(db_path)
    await reopened.sync_config_pairings({one: "assistant"}, NOW)  # the next start
    assert await reopened.pairings() == {one: "assistant", two: "helper"}
    await reopened.close()
