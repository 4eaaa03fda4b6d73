"""Pairing codes: readable, one-time, expiring, one per chat an hour, kept only as hashes."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clawpen.core import pairing
from clawpen.models import Address, InboundMessage
from clawpen.store import Lease
from clawpen.store.sqlite import SQLiteStore

LEASE = Lease("me", 10**12)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "clawpen.db")
    yield s
    await s.close()


def stranger(text: str = "let me in", platform_id: str = "1") -> InboundMessage:
    return InboundMessage(Address("telegram", "777"), "u777", text, platform_id, 0.0)


def test_codes_are_short_unambiguous_and_typed_loosely() -> None:
    codes = {pairing.new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(re.fullmatch(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", c) for c in codes)
    code = next(iter(codes))
    assert pairing.code_hash(code) == pairing.code_hash(f"  {code.lower().replace('-', ' ')} ")


async def offer(store: SQLiteStore, code: str, now: float, platform_id: str = "1") -> bool:
    return await store.offer_pairing_code(
        stranger(platform_id=platform_id),
        pairing.code_hash(code),
        pairing.code_message(code),
        LEASE,
        now,
        pairing.CODE_TTL,
        pairing.PER_CHAT_EVERY,
    )


async def test_one_code_an_hour_per_chat_and_the_strangers_text_is_not_kept(
    store: SQLiteStore,
) -> None:
    assert await offer(store, "AAAA-AAAA", 0.0) is True
    assert await offer(store, "BBBB-BBBB", 1000.0, platform_id="2") is False
    assert await offer(store, "CCCC-CCCC", 3601.0, platform_id="3") is True
    with sqlite3.connect(store.path) as db:
        texts = [row[0] for row in db.execute("SELECT text FROM messages")]
        replies = [row[0] for row in db.execute("SELECT text FROM replies ORDER BY id")]
        hashes = [row[0] for row in db.execute("SELECT code_hash FROM pairing_codes")]
    assert texts == ["", ""]
    assert "AAAA-AAAA" in replies[0] and "CCCC-CCCC" in replies[1]
    assert "AAAA-AAAA" not in str(hashes)


async def test_a_code_pairs_once_and_not_after_it_expires(store: SQLiteStore) -> None:
    await offer(store, "AAAA-AAAA", 0.0)
    assert await store.pending_pairing_codes(10.0) == [("telegram:777", pairing.CODE_TTL)]
    late = await store.approve_pairing_code(
        pairing.code_hash("AAAA-AAAA"), "assistant", "hi", LEASE, pairing.CODE_TTL + 1
    )
    assert late is None
    await offer(store, "BBBB-BBBB", 4000.0, platform_id="2")
    approved = await store.approve_pairing_code(
        pairing.code_hash("bbbb-bbbb"), "assistant", "welcome", LEASE, 4001.0
    )
    assert approved == Address("telegram", "777")
    assert (await store.pairings())[Address("telegram", "777")] == "assistant"
    again = await store.approve_pairing_code(
        pairing.code_hash("BBBB-BBBB"), "other", "welcome", LEASE, 4002.0
    )
    assert again is None
    welcome = await store.pending_replies("telegram")
    assert welcome[-1].text == "welcome" and welcome[-1].address == Address("telegram", "777")
