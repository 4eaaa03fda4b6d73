"""Pairings: which agent answers which chat, and the one-time codes by which a chat asks for one.

    pairing:       config (restored at every start) | cli | code
    pairing code:  offered (stored hashed; one per chat per ``every``) -> approved | expired

A chat that leaves its agent (unpaired, or paired with another) fails, in the same transaction,
what that agent committed for it and has not delivered (``leave_chat``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import replace

from ...models import Address, InboundMessage, Rejection
from ..base import Lease
from .connection import Connection
from .messages import insert_inbound
from .replies import insert_reply
from .rows import key_value


class Pairings(Connection):
    """Who answers which chat."""

    async def sync_config_pairings(self, pairings: Mapping[Address, str], now: float) -> None:
        def sync(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM pairings WHERE source='config'")
            db.executemany(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'config', ?)",
                [(address.chat_address, agent, now) for address, agent in pairings.items()],
            )

        await self._write(sync)

    async def pair(self, address: Address, agent_id: str, now: float) -> None:
        def pair(db: sqlite3.Connection) -> None:
            leave_chat(db, address, agent_id)
            db.execute(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'cli', ?)",
                (address.chat_address, agent_id, now),
            )

        await self._write(pair)

    async def unpair(self, address: Address) -> bool:
        def unpair(db: sqlite3.Connection) -> bool:
            leave_chat(db, address, None)
            deleted = db.execute("DELETE FROM pairings WHERE address=?", (address.chat_address,))
            return bool(deleted.rowcount)

        return await self._write(unpair)

    async def pairings(self) -> dict[Address, str]:
        pairs = await self._read_all(
            "SELECT address, agent_id FROM pairings ORDER BY address", (), key_value
        )
        return {Address.parse(chat): agent for chat, agent in pairs}

    # -- pairing codes: a stranger asks, the operator approves ----------------------------------

    async def offer_pairing_code(
        self,
        message: InboundMessage,
        code_hash: str,
        answer: str,
        lease: Lease,
        now: float,
        ttl: float,
        every: float,
    ) -> bool:
        """Record a code for the message's chat and commit the reply that carries it, unless the
        chat got one within ``every`` seconds (then nothing: False). The stranger's text is not
        kept."""

        def offer(db: sqlite3.Connection) -> bool:
            chat = message.address.chat_address
            recent = db.execute(
                "SELECT 1 FROM pairing_codes WHERE chat=? AND created_at > ?", (chat, now - every)
            ).fetchone()
            if recent is not None:
                return False
            db.execute(
                "INSERT INTO pairing_codes (code_hash, chat, sender_id, created_at, expires_at)"
                " VALUES (?,?,?,?,?)",
                (code_hash, chat, message.sender_id, now, now + ttl),
            )
            blank = replace(message, text="", attachments=())
            row = insert_inbound(blank, Rejection("pairing code", answer), lease, now, db)
            if row is None:
                return False
            db.execute(  # the code goes out on the strangers' budget, after paired chats
                "UPDATE replies SET stranger=1 WHERE task_id=(SELECT task_id FROM messages"
                " WHERE id=?)",
                (row,),
            )
            return True

        return await self._write(offer)

    async def approve_pairing_code(
        self, code_hash: str, agent_id: str, welcome: str, lease: Lease, now: float
    ) -> Address | None:
        """Pair the chat the code was given to and commit ``welcome`` to it; returns the chat,
        or None for an unknown, used or expired code."""

        def approve(db: sqlite3.Connection) -> Address | None:
            row = db.execute(
                "SELECT chat FROM pairing_codes WHERE code_hash=? AND approved_at IS NULL"
                " AND expires_at > ?",
                (code_hash, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE pairing_codes SET agent_id=?, approved_at=? WHERE code_hash=?",
                (agent_id, now, code_hash),
            )
            db.execute(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'code', ?)",
                (row[0], agent_id, now),
            )
            address = Address.parse(str(row[0]))
            task_id = db.execute(
                "INSERT INTO tasks (agent_id, channel, chat_id, status, created_at, finished_at)"
                " VALUES ('', ?, ?, 'done', ?, ?)",
                (address.channel, address.chat, now, now),
            ).lastrowid
            insert_reply(db, task_id, address, "", welcome, lease, now)
            return address

        return await self._write(approve)

    async def pending_pairing_codes(self, now: float) -> list[tuple[str, float]]:
        return await self._read_all(
            "SELECT chat, expires_at FROM pairing_codes WHERE approved_at IS NULL"
            " AND expires_at > ? ORDER BY created_at",
            (now,),
            _code,
        )


def leave_chat(db: sqlite3.Connection, address: Address, new_agent: str | None) -> None:
    """The chat at ``address`` leaves its agent (unpaired, or paired with another): what that
    agent committed for it and is not delivered yet is failed, never sent to the chat's next
    agent. In the transaction that changes the pairing, so nothing slips between the two."""
    chat = address.chat_address
    row = db.execute("SELECT agent_id FROM pairings WHERE address=?", (chat,)).fetchone()
    if row is None or row[0] == new_agent:
        return
    db.execute(
        "UPDATE replies SET status='failed', error=? WHERE channel=? AND chat_id=?"
        " AND status='pending' AND task_id IN (SELECT id FROM tasks WHERE agent_id=?)",
        (f"{chat} is no longer paired with {row[0]}", address.channel, address.chat, row[0]),
    )


def delivery_refused(db: sqlite3.Connection, agent_id: str, to: Address) -> str | None:
    """Why ``agent_id`` may no longer write to ``to`` (its chat is not paired with it), or None.
    The CLI's chat id names its agent (``router.route``); every other chat needs its pairing."""
    if to.channel == "cli":
        paired = to.chat == agent_id
    else:
        row = db.execute("SELECT agent_id FROM pairings WHERE address=?", (to.chat_address,))
        found = row.fetchone()
        paired = found is not None and found[0] == agent_id
    return None if paired else f"{to.chat_address} is no longer paired with {agent_id}"


def _code(row: sqlite3.Row) -> tuple[str, float]:
    return str(row[0]), float(row[1])
