"""Replies out, the outbox: each reply pending until every chunk is confirmed, each delivery
holding a claim, and what the platform says about a sent message later.

    reply:            pending (owner, lease, next_attempt_at) -> sent | failed
    delivery status:  sent -> delivered -> read, never back; failed wins (the platform's last word)

A delivery claims the reply at the chunk it read (``claim_reply``); a chunk is recorded only
under that claim and at that chunk (``record_chunk_sent``), so a stale read never sends a
chunk twice.
"""

from __future__ import annotations

import sqlite3

from ...models import Address, DeliveryStatus, OutboundFile, Reply
from ..base import Lease
from .connection import Connection
from .rows import key_value, reply


class Replies(Connection):
    """The outbox."""

    async def pending_replies(self, channel: str) -> list[Reply]:
        return await self._read_all(
            "SELECT * FROM replies WHERE channel=? AND status='pending' ORDER BY id",
            (channel,),
            reply,
        )

    async def claim_reply(
        self, reply_id: int, chunk: int, lease: Lease, claim: str, now: float
    ) -> bool:
        def take(db: sqlite3.Connection) -> bool:
            taken = db.execute(
                "UPDATE replies SET owner=?1, lease_until=?2, claim=?3 WHERE id=?4"
                " AND status='pending' AND chunks_sent=?5 AND (lease_until < ?6"
                " OR (claim IS NULL AND (owner IS NULL OR owner=?1)))",
                (lease.owner, lease.until, claim, reply_id, chunk, now),
            ).rowcount
            return bool(taken)

        return await self._write(take)

    async def record_chunk_sent(
        self, reply_id: int, claim: str, chunk: int, platform_id: str, done: bool, now: float
    ) -> bool:
        def record(db: sqlite3.Connection) -> bool:
            recorded = db.execute(
                "UPDATE replies SET chunks_sent=chunks_sent+1,"
                " platform_ids=ltrim(coalesce(platform_ids, '') || ',' || ?1, ','),"
                " status=CASE WHEN ?2 THEN 'sent' ELSE status END,"
                " owner=CASE WHEN ?2 THEN NULL ELSE owner END,"
                " claim=CASE WHEN ?2 THEN NULL ELSE claim END,"
                " sent_at=CASE WHEN ?2 THEN ?3 ELSE sent_at END"
                " WHERE id=?4 AND claim=?5 AND chunks_sent=?6 AND status='pending'",
                (platform_id, done, now, reply_id, claim, chunk),
            ).rowcount
            if recorded and done:  # the platform has the file: its bytes need not stay
                db.execute("UPDATE reply_files SET data=x'' WHERE reply_id=?", (reply_id,))
            return bool(recorded)

        return await self._write(record)

    async def reply_file(self, reply: Reply) -> OutboundFile | None:
        def read(db: sqlite3.Connection) -> OutboundFile | None:
            row = db.execute(
                "SELECT name, media_type, data FROM reply_files WHERE reply_id=?", (reply.id,)
            ).fetchone()
            if row is None:
                return None
            return OutboundFile(
                reply.address, row[0], row[1], bytes(row[2]), reply.text, reply.reply_to
            )

        return await self._read(read)

    async def release_reply(self, reply_id: int, claim: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE replies SET claim=NULL WHERE id=? AND claim=?", (reply_id, claim)
            )
        )

    async def record_delivery_status(
        self, channel: str, status: DeliveryStatus, now: float
    ) -> None:
        # statuses may arrive out of order: one never moves back (read stays read), and
        # failed, the platform's last word, wins
        await self._write(
            lambda db: db.execute(
                "INSERT INTO delivery_statuses (channel, chat_id, platform_id, status, error,"
                " window_closed, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7)"
                " ON CONFLICT (channel, chat_id, platform_id) DO UPDATE SET"
                " status=excluded.status, error=excluded.error,"
                " window_closed=excluded.window_closed, updated_at=excluded.updated_at"
                " WHERE delivery_statuses.status != 'failed' AND (excluded.status = 'failed'"
                " OR instr('sent delivered read', excluded.status)"
                " > instr('sent delivered read', delivery_statuses.status))",
                (
                    channel,
                    status.chat,
                    status.platform_id,
                    status.status,
                    status.error,
                    status.window_closed,
                    now,
                ),
            )
        )

    async def delivery_failures(self, since: float) -> dict[str, tuple[int, str]]:
        failures = await self._read_all(
            "WITH failures (channel, error, at) AS ("
            " SELECT channel, error, updated_at FROM delivery_statuses"
            " WHERE status='failed' AND updated_at >= ?1"
            " UNION ALL SELECT channel, coalesce(error, ''), created_at FROM replies"
            " WHERE status='failed' AND created_at >= ?1)"
            " SELECT channel, COUNT(*), (SELECT error FROM failures f2"
            " WHERE f2.channel = f.channel ORDER BY at DESC LIMIT 1)"
            " FROM failures f GROUP BY channel",
            (since,),
            _failures,
        )
        return dict(failures)

    async def record_send_failure(
        self,
        reply_id: int,
        claim: str,
        error: str,
        final: bool,
        next_attempt_at: float,
        counted: bool = True,
    ) -> None:
        def record(db: sqlite3.Connection) -> None:
            changed = db.execute(
                "UPDATE replies SET attempts=attempts+?, error=?, status=?, next_attempt_at=?,"
                " claim=NULL WHERE id=? AND claim=? AND status='pending'",
                (
                    int(counted),
                    error,
                    "failed" if final else "pending",
                    next_attempt_at,
                    reply_id,
                    claim,
                ),
            ).rowcount
            if changed and final:
                _tell_file_lost(db, reply_id, error, next_attempt_at)

        await self._write(record)

    async def outbox_depth(self) -> dict[str, int]:
        pending = await self._read_all(
            "SELECT channel, COUNT(*) FROM replies WHERE status='pending' GROUP BY channel",
            (),
            key_value,
        )
        return dict(pending)

    async def take_unread(self, address: Address) -> list[str]:
        def take(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT id, text FROM replies WHERE channel=? AND chat_id=? AND thread=?"
                " AND status='sent' AND platform_ids LIKE 'unread:%' ORDER BY id",
                (address.channel, address.chat, address.thread),
            ).fetchall()
            db.executemany(
                "UPDATE replies SET platform_ids='read:' || substr(platform_ids, 8) WHERE id=?",
                [(row[0],) for row in rows],
            )
            return [str(row[1]) for row in rows]

        return await self._write(take)

    async def replies_for(self, address: Address) -> list[Reply]:
        return await self._read_all(
            "SELECT * FROM replies WHERE channel=? AND chat_id=? AND thread=? ORDER BY id",
            (address.channel, address.chat, address.thread),
            reply,
        )


# -- the writes other families commit a reply with ----------------------------------------------


def insert_reply(
    db: sqlite3.Connection,
    task_id: int | None,
    address: Address,
    reply_to: str,
    text: str,
    lease: Lease,
    now: float,
) -> None:
    db.execute(
        "INSERT OR IGNORE INTO replies (task_id, channel, chat_id, thread, reply_to, text,"
        " status, created_at, owner, lease_until) VALUES (?,?,?,?,?,?, 'pending', ?,?,?)",
        (
            task_id,
            address.channel,
            address.chat,
            address.thread,
            reply_to,
            text,
            now,
            lease.owner,
            lease.until,
        ),
    )


def task_reply(db: sqlite3.Connection, task_id: int | None) -> Reply:
    """The reply just committed for ``task_id``."""
    return reply(db.execute("SELECT * FROM replies WHERE task_id=?", (task_id,)).fetchone())


def _tell_file_lost(db: sqlite3.Connection, reply_id: int, error: str, now: float) -> None:
    """A file given up on is said in the chat, as a text reply of its own, in the same
    transaction: the user hears that a file did not come, and why, never silence."""
    found = db.execute(
        "SELECT r.channel, r.chat_id, r.thread, f.name, t.agent_id FROM replies r"
        " JOIN reply_files f ON f.reply_id = r.id JOIN tasks t ON t.id = r.task_id"
        " WHERE r.id=?",
        (reply_id,),
    ).fetchone()
    if found is None:
        return
    channel, chat, thread, name, agent_id = found
    task_id = db.execute(
        "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, created_at, finished_at)"
        " VALUES (?, ?, ?, ?, 'done', ?, ?)",
        (agent_id, channel, chat, thread, now, now),
    ).lastrowid
    text = f"I could not send you the file {name}: {error[:300]}"
    insert_reply(db, task_id, Address(channel, chat, thread), "", text, Lease("", 0.0), now)


def _failures(row: sqlite3.Row) -> tuple[str, tuple[int, str]]:
    return row[0], (row[1], row[2])
