"""The SQLite store: the only module that speaks the application's SQL.

WAL mode with ``synchronous=FULL``: when a write's future resolves, what it wrote survives a
crash of the process or the machine. Writes and reads run on threads of their own
(``worker.py``: group commit, a savepoint per write), the schema is ``migrations.py``, and the
state machines are in ``base.py``. Each write below is a plain function of a connection, run on
the writer thread inside its own savepoint.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

from ..models import (
    Address,
    ClaimedTask,
    Decision,
    DeliveryStatus,
    InboundMessage,
    Rejection,
    Reply,
    Stranger,
    TaskFile,
)
from .base import Lease, UsageRow
from .migrations import MIGRATIONS
from .worker import Worker, classify, connect

T = TypeVar("T")


class SQLiteStore:
    """``Store`` on one SQLite file. Open it from the thread that runs the event loop."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            writer = connect(self.path)
            self._migrate(writer)
            reader = connect(self.path)
            reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from None
        self._writer = Worker("store-writer", writer, self.path, transactional=True)
        self._reader = Worker("store-reader", reader, self.path, transactional=False)
        self._writer.start()
        self._reader.start()
        self._closed = False

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._writer.stop)
            await asyncio.to_thread(self._reader.stop)

    def _write(self, run: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue a write at once (so writes commit in the order they were asked for)."""
        return self._writer.submit(run)

    def _read(self, run: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        return self._reader.submit(run)

    # -- inbound -------------------------------------------------------------------------------

    async def record_inbound(
        self, message: InboundMessage, decision: Decision, lease: Lease, now: float
    ) -> int | None:
        return await self._write(partial(_record_inbound, message, decision, lease, now))

    async def record_stranger(self, stranger: Stranger) -> None:
        await self._write(partial(_record_stranger, stranger))

    async def expire_strangers(self, before: float) -> int:
        return await self._write(
            lambda db: db.execute("DELETE FROM strangers WHERE received_at < ?", (before,)).rowcount
        )

    # -- tasks ---------------------------------------------------------------------------------

    async def claim_next_task(self, agent_id: str, lease: Lease, now: float) -> ClaimedTask | None:
        return await self._write(partial(_claim_next_task, agent_id, lease, now))

    async def task_files(self, task_id: int) -> list[TaskFile]:
        def files(db: sqlite3.Connection) -> list[TaskFile]:
            rows = db.execute(
                "SELECT m.platform_id, f.name, f.media_type, f.data FROM files f"
                " JOIN messages m ON m.id = f.message_id WHERE m.task_id=? ORDER BY f.id",
                (task_id,),
            )
            return [TaskFile(*row) for row in rows.fetchall()]

        return await self._read(files)

    async def retry_task(self, task_id: int, lease: Lease) -> int:
        return await self._write(partial(_retry_task, task_id, lease))

    async def finish_task(
        self, task_id: int, text: str, error: str | None, lease: Lease, now: float
    ) -> Reply | None:
        return await self._write(partial(_finish_task, task_id, text, error, lease, now))

    async def release_task(self, task_id: int, owner: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE tasks SET owner=NULL, lease_until=0, resumes=resumes-1"
                " WHERE id=? AND owner=? AND status='running'",
                (task_id, owner),
            )
        )

    async def renew_leases(self, lease: Lease) -> None:
        def renew(db: sqlite3.Connection) -> None:
            args = (lease.until, lease.owner)
            db.execute("UPDATE tasks SET lease_until=? WHERE owner=? AND status='running'", args)
            db.execute("UPDATE replies SET lease_until=? WHERE owner=? AND status='pending'", args)

        await self._write(renew)

    async def release_leases(self, owner: str | None = None) -> int:
        def release(db: sqlite3.Connection) -> int:
            where = "(?1 IS NULL OR owner=?1)"
            freed = db.execute(
                f"UPDATE tasks SET owner=NULL, lease_until=0 WHERE status='running' AND {where}",
                (owner,),
            ).rowcount
            freed += db.execute(
                f"UPDATE replies SET owner=NULL, lease_until=0 WHERE status='pending' AND {where}",
                (owner,),
            ).rowcount
            return int(freed)

        return await self._write(release)

    # -- replies -------------------------------------------------------------------------------

    async def pending_replies(self, channel: str) -> list[Reply]:
        def pending(db: sqlite3.Connection) -> list[Reply]:
            rows = db.execute(
                "SELECT * FROM replies WHERE channel=? AND status='pending' ORDER BY id",
                (channel,),
            )
            return [_reply(row) for row in rows.fetchall()]

        return await self._read(pending)

    async def lease_reply(self, reply_id: int, lease: Lease, now: float) -> bool:
        def take(db: sqlite3.Connection) -> bool:
            taken = db.execute(
                "UPDATE replies SET owner=?1, lease_until=?2 WHERE id=?3 AND status='pending'"
                " AND (owner IS NULL OR owner=?1 OR lease_until < ?4)",
                (lease.owner, lease.until, reply_id, now),
            ).rowcount
            return bool(taken)

        return await self._write(take)

    async def record_chunk_sent(
        self, reply_id: int, platform_id: str, done: bool, now: float
    ) -> None:
        def record(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE replies SET chunks_sent=chunks_sent+1,"
                " platform_ids=ltrim(coalesce(platform_ids, '') || ',' || ?1, ','),"
                " status=CASE WHEN ?2 THEN 'sent' ELSE status END,"
                " owner=CASE WHEN ?2 THEN NULL ELSE owner END,"
                " sent_at=CASE WHEN ?2 THEN ?3 ELSE sent_at END WHERE id=?4",
                (platform_id, done, now, reply_id),
            )

        await self._write(record)

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
        def read(db: sqlite3.Connection) -> dict[str, tuple[int, str]]:
            rows = db.execute(
                "SELECT channel, COUNT(*), (SELECT error FROM delivery_statuses d2"
                " WHERE d2.channel = d.channel AND d2.status='failed'"
                " ORDER BY updated_at DESC LIMIT 1) FROM delivery_statuses d"
                " WHERE status='failed' AND updated_at >= ? GROUP BY channel",
                (since,),
            )
            return {channel: (count, error) for channel, count, error in rows.fetchall()}

        return await self._read(read)

    async def record_send_failure(
        self, reply_id: int, error: str, final: bool, next_attempt_at: float, counted: bool = True
    ) -> None:
        def record(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE replies SET attempts=attempts+?, error=?, status=?, next_attempt_at=?"
                " WHERE id=?",
                (int(counted), error, "failed" if final else "pending", next_attempt_at, reply_id),
            )

        await self._write(record)

    # -- agents, usage, pairings ---------------------------------------------------------------

    async def set_agent_state(
        self, agent_id: str, state: str, container_id: str | None, now: float
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO agents (id, container_id, state, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET container_id=excluded.container_id,"
                " state=excluded.state, updated_at=excluded.updated_at",
                (agent_id, container_id, state, now),
            )
        )

    async def record_usage(
        self,
        agent_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        now: float,
        usd: float = 0.0,
        estimated: bool = False,
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage (agent_id, model, input_tokens, output_tokens, at, cost_usd,"
                " estimated) VALUES (?,?,?,?,?,?,?)",
                (agent_id, model, input_tokens, output_tokens, now, usd, int(estimated)),
            )
        )

    async def tokens_used_since(self, agent_id: str, since: float) -> int:
        return (await self.spent_since(agent_id, since))[0]

    async def spent_since(self, agent_id: str, since: float) -> tuple[int, float]:
        def spent(db: sqlite3.Connection) -> tuple[int, float]:
            row = db.execute(
                "SELECT COALESCE(SUM(input_tokens + output_tokens), 0), COALESCE(SUM(cost_usd), 0)"
                " FROM usage WHERE agent_id=? AND at>=?",
                (agent_id, since),
            ).fetchone()
            return int(row[0]), float(row[1])

        return await self._read(spent)

    async def usage_by_day(self, since: float, agent_id: str | None = None) -> list[UsageRow]:
        def rows(db: sqlite3.Connection) -> list[UsageRow]:
            found = db.execute(
                "SELECT date(at, 'unixepoch') AS day, agent_id, model, COUNT(*),"
                " SUM(input_tokens), SUM(output_tokens), SUM(cost_usd), SUM(estimated)"
                " FROM usage WHERE at>=? AND (? IS NULL OR agent_id=?)"
                " GROUP BY day, agent_id, model ORDER BY day, agent_id, model",
                (since, agent_id, agent_id),
            ).fetchall()
            return [UsageRow(*row) for row in found]

        return await self._read(rows)

    async def sync_config_pairings(self, pairings: dict[str, str], now: float) -> None:
        def sync(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM pairings WHERE source='config'")
            db.executemany(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'config', ?)",
                [(address, agent, now) for address, agent in pairings.items()],
            )

        await self._write(sync)

    async def pair(self, address: str, agent_id: str, now: float) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'cli', ?)",
                (address, agent_id, now),
            )
        )

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
            return (
                _record_inbound(blank, Rejection("pairing code", answer), lease, now, db)
                is not None
            )

        return await self._write(offer)

    async def approve_pairing_code(
        self, code_hash: str, agent_id: str, welcome: str, lease: Lease, now: float
    ) -> str | None:
        """Pair the chat the code was given to and commit ``welcome`` to it; returns the chat,
        or None for an unknown, used or expired code."""

        def approve(db: sqlite3.Connection) -> str | None:
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
            channel, _, chat = str(row[0]).partition(":")
            address = Address(channel, chat)
            task_id = db.execute(
                "INSERT INTO tasks (agent_id, channel, chat_id, status, created_at, finished_at)"
                " VALUES ('', ?, ?, 'done', ?, ?)",
                (channel, chat, now, now),
            ).lastrowid
            _insert_reply(db, task_id, address, "", welcome, lease, now)
            return str(row[0])

        return await self._write(approve)

    async def pending_pairing_codes(self, now: float) -> list[tuple[str, float]]:
        def read(db: sqlite3.Connection) -> list[tuple[str, float]]:
            rows = db.execute(
                "SELECT chat, expires_at FROM pairing_codes WHERE approved_at IS NULL"
                " AND expires_at > ? ORDER BY created_at",
                (now,),
            )
            return [(str(chat), float(expires)) for chat, expires in rows.fetchall()]

        return await self._read(read)

    async def unpair(self, address: str) -> bool:
        return await self._write(
            lambda db: bool(db.execute("DELETE FROM pairings WHERE address=?", (address,)).rowcount)
        )

    async def pairings(self) -> dict[str, str]:
        def read(db: sqlite3.Connection) -> dict[str, str]:
            rows = db.execute("SELECT address, agent_id FROM pairings ORDER BY address")
            return {row[0]: row[1] for row in rows}

        return await self._read(read)

    # -- reading, for status and tests ---------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            for table in ("messages", "tasks", "replies"):
                for status, n in db.execute(
                    f"SELECT status, COUNT(*) FROM {table} GROUP BY status"
                ):
                    out[f"{table}.{status}"] = n
            out["strangers"] = db.execute("SELECT COUNT(*) FROM strangers").fetchone()[0]
            return out

        return await self._read(count)

    async def replies_for(self, address: Address) -> list[Reply]:
        def read(db: sqlite3.Connection) -> list[Reply]:
            rows = db.execute(
                "SELECT * FROM replies WHERE channel=? AND chat_id=? AND thread=? ORDER BY id",
                (address.channel, address.chat, address.thread),
            )
            return [_reply(row) for row in rows.fetchall()]

        return await self._read(read)


# -- the writes, each run on the writer thread inside its own savepoint --------------------------


def _record_inbound(
    message: InboundMessage, decision: Decision, lease: Lease, now: float, db: sqlite3.Connection
) -> int | None:
    address = message.address
    if isinstance(decision, Rejection):
        status, agent, reason = "rejected", None, decision.reason
    else:
        status, agent, reason = "queued", decision.agent_id, None
    cursor = db.execute(
        "INSERT OR IGNORE INTO messages (channel, chat_id, thread, sender_id, platform_id,"
        " reply_to, text, received_at, status, agent_id, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            address.channel,
            address.chat,
            address.thread,
            message.sender_id,
            message.platform_id,
            message.reply_to,
            message.text,
            message.received_at,
            status,
            agent,
            reason,
        ),
    )
    if not cursor.rowcount:
        return None
    row = cursor.lastrowid
    if not isinstance(decision, Rejection):
        db.executemany(
            "INSERT INTO files (message_id, name, media_type, data) VALUES (?,?,?,?)",
            [(row, f.name, f.media_type, f.data) for f in message.attachments],
        )
    if isinstance(decision, Rejection) and decision.answer:
        # A refused message still gets its answer, through the same reply path as any other.
        task_id = db.execute(
            "INSERT INTO tasks (agent_id, channel, chat_id, thread, reply_to, status, created_at,"
            " finished_at, error) VALUES ('', ?, ?, ?, ?, 'failed', ?, ?, 'refused')",
            (address.channel, address.chat, address.thread, message.platform_id, now, now),
        ).lastrowid
        db.execute("UPDATE messages SET task_id=? WHERE id=?", (task_id, row))
        _insert_reply(db, task_id, address, message.platform_id, decision.answer, lease, now)
    return row


def _record_stranger(stranger: Stranger, db: sqlite3.Connection) -> None:
    db.execute(
        "INSERT INTO strangers (channel, chat_id, sender_id, size, received_at) VALUES (?,?,?,?,?)",
        (
            stranger.address.channel,
            stranger.address.chat,
            stranger.sender_id,
            stranger.size,
            stranger.received_at,
        ),
    )


def _claim_next_task(
    agent_id: str, lease: Lease, now: float, db: sqlite3.Connection
) -> ClaimedTask | None:
    orphan = db.execute(
        "SELECT id FROM tasks WHERE agent_id=? AND status='running' AND lease_until < ?"
        " ORDER BY id LIMIT 1",
        (agent_id, now),
    ).fetchone()
    if orphan is not None:
        db.execute(
            "UPDATE tasks SET owner=?, lease_until=?, resumes=resumes+1 WHERE id=?",
            (lease.owner, lease.until, orphan[0]),
        )
        return _claimed(db, orphan[0], resumed=True)
    first = db.execute(
        "SELECT channel, chat_id, thread FROM messages WHERE agent_id=? AND status='queued'"
        " ORDER BY id LIMIT 1",
        (agent_id,),
    ).fetchone()
    if first is None:
        return None
    channel, chat_id, thread = first
    task_id = db.execute(
        "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, owner, lease_until,"
        " created_at) VALUES (?,?,?,?, 'running', ?,?,?)",
        (agent_id, channel, chat_id, thread, lease.owner, lease.until, now),
    ).lastrowid
    db.execute(
        "UPDATE messages SET status='claimed', task_id=? WHERE agent_id=? AND channel=?"
        " AND chat_id=? AND thread=? AND status='queued'",
        (task_id, agent_id, channel, chat_id, thread),
    )
    db.execute(
        "UPDATE tasks SET reply_to=(SELECT platform_id FROM messages WHERE task_id=?1"
        " ORDER BY id DESC LIMIT 1) WHERE id=?1",
        (task_id,),
    )
    assert task_id is not None
    return _claimed(db, task_id, resumed=False)


def _claimed(db: sqlite3.Connection, task_id: int, resumed: bool) -> ClaimedTask:
    task = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
    lines = db.execute(
        "SELECT sender_id, text, platform_id,"
        " EXISTS (SELECT 1 FROM files WHERE message_id=messages.id)"
        " FROM messages WHERE task_id=? ORDER BY id",
        (task_id,),
    ).fetchall()
    return ClaimedTask(
        id=task_id,
        agent_id=task["agent_id"],
        address=Address(task["channel"], task["chat_id"], task["thread"]),
        senders=tuple(row[0] for row in lines),
        texts=tuple(row[1] for row in lines),
        attempts=task["attempts"],
        resumes=task["resumes"],
        reply_to=task["reply_to"],
        resumed=resumed,
        platform_ids=tuple(row[2] for row in lines),
        has_files=any(row[3] for row in lines),
    )


def _retry_task(task_id: int, lease: Lease, db: sqlite3.Connection) -> int:
    db.execute(
        "UPDATE tasks SET attempts=attempts+1, lease_until=? WHERE id=?", (lease.until, task_id)
    )
    return int(db.execute("SELECT attempts FROM tasks WHERE id=?", (task_id,)).fetchone()[0])


def _finish_task(
    task_id: int, text: str, error: str | None, lease: Lease, now: float, db: sqlite3.Connection
) -> Reply | None:
    closed = db.execute(
        "UPDATE tasks SET status=?, finished_at=?, error=?, owner=NULL, lease_until=0"
        " WHERE id=? AND status='running' AND owner IS ?",
        ("failed" if error else "done", now, error, task_id, lease.owner),
    ).rowcount
    if not closed:
        return None  # no longer ours (or finished already): its owner answers it
    db.execute("UPDATE messages SET status='answered' WHERE task_id=?", (task_id,))
    # the agent has its files now (or never will): they need not fill the database
    db.execute(
        "DELETE FROM files WHERE message_id IN (SELECT id FROM messages WHERE task_id=?)",
        (task_id,),
    )
    task = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
    address = Address(task["channel"], task["chat_id"], task["thread"])
    _insert_reply(db, task_id, address, task["reply_to"], text, lease, now)
    return _reply(db.execute("SELECT * FROM replies WHERE task_id=?", (task_id,)).fetchone())


def _insert_reply(
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


def _reply(row: sqlite3.Row) -> Reply:
    return Reply(
        id=row["id"],
        task_id=row["task_id"],
        address=Address(row["channel"], row["chat_id"], row["thread"]),
        text=row["text"],
        reply_to=row["reply_to"],
        attempts=row["attempts"],
        chunks_sent=row["chunks_sent"],
        next_attempt_at=row["next_attempt_at"],
        owner=row["owner"],
        lease_until=row["lease_until"],
    )
