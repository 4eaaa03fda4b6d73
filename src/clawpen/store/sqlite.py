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
    JOB_CHANNEL,
    Address,
    ClaimedTask,
    Decision,
    DeliveryStatus,
    InboundMessage,
    Job,
    JobFiring,
    JobRun,
    JobSpec,
    Rejection,
    Reply,
    Stranger,
    TaskFile,
)
from .base import Lease, RecentMessage, RecentTask, StrangerChat, UsageRow
from .migrations import MIGRATIONS
from .worker import Worker, classify, connect

T = TypeVar("T")
RECENT_TEXT = 300  # characters of a message's text the dashboard is given


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

    async def record_command(
        self,
        message: InboundMessage,
        agent_id: str,
        answer: str,
        new_session: bool,
        lease: Lease,
        now: float,
    ) -> int | None:
        return await self._write(
            partial(_record_command, message, agent_id, answer, new_session, lease, now)
        )

    async def session_number(self, agent_id: str, conversation: str) -> int:
        def read(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT number FROM sessions WHERE agent_id=? AND conversation=?",
                (agent_id, conversation),
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._read(read)

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
                "UPDATE replies SET owner=NULL, lease_until=0, claim=NULL"
                f" WHERE status='pending' AND {where}",
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
            return bool(recorded)

        return await self._write(record)

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
        def read(db: sqlite3.Connection) -> dict[str, tuple[int, str]]:
            rows = db.execute(
                "WITH failures (channel, error, at) AS ("
                " SELECT channel, error, updated_at FROM delivery_statuses"
                " WHERE status='failed' AND updated_at >= ?1"
                " UNION ALL SELECT channel, coalesce(error, ''), created_at FROM replies"
                " WHERE status='failed' AND created_at >= ?1)"
                " SELECT channel, COUNT(*), (SELECT error FROM failures f2"
                " WHERE f2.channel = f.channel ORDER BY at DESC LIMIT 1)"
                " FROM failures f GROUP BY channel",
                (since,),
            )
            return {channel: (count, error) for channel, count, error in rows.fetchall()}

        return await self._read(read)

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
            db.execute(
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

    async def recent_messages(self, limit: int) -> list[RecentMessage]:
        def read(db: sqlite3.Connection) -> list[RecentMessage]:
            rows = db.execute(
                "SELECT id, channel, chat_id, sender_id, substr(text, 1, ?), received_at, status,"
                " agent_id FROM messages ORDER BY id DESC LIMIT ?",
                (RECENT_TEXT, limit),
            )
            return [RecentMessage(*row) for row in rows.fetchall()]

        return await self._read(read)

    async def recent_tasks(self, limit: int) -> list[RecentTask]:
        def read(db: sqlite3.Connection) -> list[RecentTask]:
            rows = db.execute(
                "SELECT id, agent_id, channel, chat_id, status, created_at, finished_at, error"
                " FROM tasks WHERE agent_id != '' ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            return [RecentTask(*row) for row in rows.fetchall()]

        return await self._read(read)

    async def outbox_depth(self) -> dict[str, int]:
        def read(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute(
                "SELECT channel, COUNT(*) FROM replies WHERE status='pending' GROUP BY channel"
            )
            return {channel: n for channel, n in rows.fetchall()}

        return await self._read(read)

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
        def pair(db: sqlite3.Connection) -> None:
            _leave_chat(db, address, agent_id)
            db.execute(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'cli', ?)",
                (address, agent_id, now),
            )

        await self._write(pair)

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
            row = _record_inbound(blank, Rejection("pairing code", answer), lease, now, db)
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

    async def record_agent_message(
        self, agent_id: str, address: Address, text: str, lease: Lease, now: float
    ) -> Reply | None:
        def record(db: sqlite3.Connection) -> Reply | None:
            if _delivery_refused(db, agent_id, address) is not None:
                return None  # unpaired since the agent was allowed: nothing is queued
            task_id = db.execute(
                "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, created_at,"
                " finished_at) VALUES (?, ?, ?, ?, 'done', ?, ?)",
                (agent_id, address.channel, address.chat, address.thread, now, now),
            ).lastrowid
            _insert_reply(db, task_id, address, "", text, lease, now)
            row = db.execute("SELECT * FROM replies WHERE task_id=?", (task_id,)).fetchone()
            return _reply(row)

        return await self._write(record)

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
        def unpair(db: sqlite3.Connection) -> bool:
            _leave_chat(db, address, None)
            return bool(db.execute("DELETE FROM pairings WHERE address=?", (address,)).rowcount)

        return await self._write(unpair)

    async def pairings(self) -> dict[str, str]:
        def read(db: sqlite3.Connection) -> dict[str, str]:
            rows = db.execute("SELECT address, agent_id FROM pairings ORDER BY address")
            return {row[0]: row[1] for row in rows}

        return await self._read(read)

    # -- scheduled jobs -------------------------------------------------------------------------

    async def sync_config_jobs(
        self, jobs: list[tuple[JobSpec, float | None]], now: float
    ) -> dict[str, list[str]]:
        return await self._write(partial(_sync_config_jobs, jobs, now))

    async def add_job(self, job: JobSpec, next_run: float | None, now: float) -> bool:
        return await self._write(lambda db: _insert_job(db, job, next_run, now))

    async def remove_job(self, agent_id: str, name: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            gone = db.execute(
                "DELETE FROM jobs WHERE agent_id=? AND name=?", (agent_id, name)
            ).rowcount
            if gone:  # its finished history goes with it; a run in progress still answers
                _forget_runs(db, agent_id, name)
            return bool(gone)

        return await self._write(remove)

    async def jobs(self, agent_id: str | None = None) -> list[Job]:
        def read(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute(
                f"{_JOB_SELECT} WHERE ?1 IS NULL OR j.agent_id=?1 ORDER BY j.name, j.agent_id",
                (agent_id,),
            )
            return [_job(row) for row in rows.fetchall()]

        return await self._read(read)

    async def set_job_state(
        self, agent_id: str, name: str, state: str, next_run: float | None, reason: str = ""
    ) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE jobs SET state=?1, paused_reason=?2,"
                " failures=CASE WHEN ?1='active' THEN 0 ELSE failures END,"
                " next_run=coalesce(?3, next_run) WHERE agent_id=?4 AND name=?5",
                (state, reason, next_run, agent_id, name),
            ).rowcount
            return bool(changed)

        return await self._write(update)

    async def due_jobs(self, now: float, limit: int) -> list[Job]:
        def read(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute(
                f"{_JOB_SELECT_BARE} WHERE j.state='active' AND j.next_run <= ?"
                " AND j.running_run IS NULL ORDER BY j.next_run LIMIT ?",
                (now, limit),
            )
            return [_job(row) for row in rows.fetchall()]

        return await self._read(read)

    async def next_due(self) -> float | None:
        def read(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT min(next_run) FROM jobs WHERE state='active' AND running_run IS NULL"
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._read(read)

    async def fire_jobs(self, firings: list[JobFiring], now: float) -> list[tuple[str, str]]:
        return await self._write(partial(_fire_jobs, firings, now))

    async def job_runs(self, agent_id: str, name: str, limit: int = 20) -> list[JobRun]:
        def read(db: sqlite3.Connection) -> list[JobRun]:
            rows = db.execute(
                "SELECT * FROM job_runs WHERE agent_id=? AND job=? ORDER BY id DESC LIMIT ?",
                (agent_id, name, limit),
            )
            return [_job_run(row) for row in rows.fetchall()]

        return await self._read(read)

    # -- reading, for status and tests ---------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            for table in ("messages", "tasks", "replies"):
                # a refusal's answer is a task of its own, failed with error 'refused': it is
                # counted as refused, not as a task that failed
                refused = "error = 'refused'" if table == "tasks" else "0"
                for status, n in db.execute(
                    f"SELECT CASE WHEN {refused} THEN 'refused' ELSE status END, COUNT(*)"
                    f" FROM {table} GROUP BY 1"
                ):
                    out[f"{table}.{status}"] = n
            out["strangers"] = db.execute("SELECT COUNT(*) FROM strangers").fetchone()[0]
            return out

        return await self._read(count)

    async def stranger_chats(self, since: float) -> list[StrangerChat]:
        def read(db: sqlite3.Connection) -> list[StrangerChat]:
            rows = db.execute(
                "SELECT channel || ':' || chat_id, COUNT(*), COUNT(DISTINCT sender_id),"
                " MAX(received_at) FROM strangers WHERE received_at >= ?"
                " GROUP BY channel, chat_id ORDER BY MAX(received_at) DESC",
                (since,),
            ).fetchall()
            chats = []
            for chat, messages, senders, last_seen in rows:
                channel, chat_id = chat.split(":", 1)
                last = db.execute(
                    "SELECT sender_id FROM strangers WHERE channel=? AND chat_id=?"
                    " ORDER BY received_at DESC, id DESC LIMIT 1",
                    (channel, chat_id),
                ).fetchone()[0]
                chats.append(StrangerChat(chat, messages, senders, last, last_seen))
            return chats

        return await self._read(read)

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


def _record_command(
    message: InboundMessage,
    agent_id: str,
    answer: str,
    new_session: bool,
    lease: Lease,
    now: float,
    db: sqlite3.Connection,
) -> int | None:
    """An in-chat command: stored and answered like a refusal (never queued for the agent),
    then marked answered; ``/new`` moves the chat's session on in the same transaction."""
    row = _record_inbound(message, Rejection("command", answer), lease, now, db)
    if row is None:
        return None
    db.execute("UPDATE messages SET status='answered', agent_id=? WHERE id=?", (agent_id, row))
    db.execute(
        "UPDATE tasks SET status='done', error=NULL WHERE id=(SELECT task_id FROM messages"
        " WHERE id=?)",
        (row,),
    )
    if new_session:
        db.execute(
            "INSERT INTO sessions (agent_id, conversation, number, started_at) VALUES (?,?,1,?)"
            " ON CONFLICT (agent_id, conversation) DO UPDATE SET number=number+1,"
            " started_at=excluded.started_at",
            (agent_id, str(message.address), now),
        )
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


def _leave_chat(db: sqlite3.Connection, address: str, new_agent: str | None) -> None:
    """The chat at ``address`` leaves its agent (unpaired, or paired with another): what that
    agent committed for it and is not delivered yet is failed, never sent to the chat's next
    agent. In the transaction that changes the pairing, so nothing slips between the two."""
    row = db.execute("SELECT agent_id FROM pairings WHERE address=?", (address,)).fetchone()
    if row is None or row[0] == new_agent:
        return
    channel, _, chat = address.partition(":")
    db.execute(
        "UPDATE replies SET status='failed', error=? WHERE channel=? AND chat_id=?"
        " AND status='pending' AND task_id IN (SELECT id FROM tasks WHERE agent_id=?)",
        (f"{address} is no longer paired with {row[0]}", channel, chat, row[0]),
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
    reply_to = task["reply_to"]
    if address.channel == JOB_CHANNEL:  # a job's run: answered to its deliver_to, quoting none
        address, text, refused = _finish_job_run(
            db, task["agent_id"], address.chat, text, error, now
        )
        reply_to = ""
    else:
        refused = None  # a chat's own answer; unpairing fails what is pending (_leave_chat)
    _insert_reply(db, task_id, address, reply_to, text, lease, now)
    if refused is not None:  # the chat left the job's agent while it ran: kept, never sent
        db.execute(
            "UPDATE replies SET status='failed', error=? WHERE task_id=?", (refused, task_id)
        )
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
        stranger=bool(row["stranger"]),
    )


# -- scheduled jobs ---------------------------------------------------------------------------

_JOB_SELECT_BARE = (
    "SELECT j.*, NULL AS last_status, NULL AS last_error, NULL AS last_at FROM jobs j"
)
_JOB_SELECT = (
    "SELECT j.*, r.status AS last_status, r.error AS last_error, r.fired_at AS last_at FROM jobs j"
    " LEFT JOIN job_runs r ON r.id ="
    " (SELECT max(id) FROM job_runs WHERE agent_id=j.agent_id AND job=j.name)"
)
_JOB_DEFINITION = (
    "agent_id",
    "kind",
    "spec",
    "timezone",
    "task",
    "deliver_channel",
    "deliver_chat",
    "deliver_thread",
    "misfire",
    "max_failures",
)


def _job_values(job: JobSpec) -> tuple[object, ...]:
    to = job.deliver_to
    return (
        job.agent_id,
        job.kind,
        job.spec,
        job.timezone,
        job.task,
        to.channel,
        to.chat,
        to.thread,
        job.misfire,
        job.max_failures,
    )


def _insert_job(db: sqlite3.Connection, job: JobSpec, next_run: float | None, now: float) -> bool:
    columns = ", ".join(_JOB_DEFINITION)
    inserted = db.execute(
        f"INSERT OR IGNORE INTO jobs (name, {columns}, source, state, next_run, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job.name,
            *_job_values(job),
            job.source,
            "active" if next_run is not None else "done",
            next_run,
            now,
        ),
    ).rowcount
    return bool(inserted)


def _sync_config_jobs(
    jobs: list[tuple[JobSpec, float | None]], now: float, db: sqlite3.Connection
) -> dict[str, list[str]]:
    """The config file's jobs, exactly: new ones added, changed ones updated (their history
    kept, their next run worked out anew), the ones no longer in the file removed."""
    done: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    keys = [(job.agent_id, job.name) for job, _ in jobs]
    for agent_id, name in db.execute(
        "SELECT agent_id, name FROM jobs WHERE source='config' ORDER BY name, agent_id"
    ).fetchall():
        if (agent_id, name) not in keys:
            db.execute("DELETE FROM jobs WHERE agent_id=? AND name=?", (agent_id, name))
            _forget_runs(db, agent_id, name)
            done["removed"].append(f"{agent_id}/{name}")
    columns = ", ".join(_JOB_DEFINITION)
    for job, next_run in jobs:
        row = db.execute(
            f"SELECT {columns}, source FROM jobs WHERE agent_id=? AND name=?",
            (job.agent_id, job.name),
        ).fetchone()
        if row is None:
            _insert_job(db, job, next_run, now)
            done["added"].append(f"{job.agent_id}/{job.name}")
        elif tuple(row)[:-1] != _job_values(job) or row["source"] != "config":
            sets = ", ".join(f"{c}=?" for c in _JOB_DEFINITION)
            db.execute(
                f"UPDATE jobs SET {sets}, source='config', next_run=?, failures=0,"
                " paused_reason='', state=? WHERE agent_id=? AND name=?",
                (
                    *_job_values(job),
                    next_run,
                    "active" if next_run is not None else "done",
                    job.agent_id,
                    job.name,
                ),
            )
            done["changed"].append(f"{job.agent_id}/{job.name}")
    return done


def _forget_runs(db: sqlite3.Connection, agent_id: str, name: str) -> None:
    """A removed job's finished history; a run in progress still answers."""
    db.execute(
        "DELETE FROM job_runs WHERE agent_id=? AND job=? AND status != 'running'", (agent_id, name)
    )


def _fire_jobs(
    firings: list[JobFiring], now: float, db: sqlite3.Connection
) -> list[tuple[str, str]]:
    """Carry out the scheduler's decisions: each job's run is recorded, queued as a message of
    its own conversation and its next run advanced, all in this one transaction, and only if
    the job is still as the scheduler saw it (due at that time, no run of it going). A job
    whose chat is no longer paired with its agent does not run: it is paused, saying why."""
    fired: list[tuple[str, str]] = []
    for firing in firings:
        key = (firing.agent_id, firing.name)
        job = db.execute("SELECT * FROM jobs WHERE agent_id=? AND name=?", key).fetchone()
        if job is None or job["running_run"] is not None:
            continue
        manual = firing.due is None
        if not manual and (job["state"] != "active" or job["next_run"] != firing.due):
            continue  # changed or fired meanwhile
        refused = _delivery_refused(db, job["agent_id"], _deliver_to(job))
        if refused is not None:
            reason = _job_unpaired(refused, job["agent_id"], job["name"], _deliver_to(job))
            _pause_unpaired(db, job, reason, now)
            continue
        if not manual:
            db.execute(
                "UPDATE jobs SET next_run=?, state=? WHERE agent_id=? AND name=?",
                (firing.next_run, "active" if firing.next_run is not None else "done", *key),
            )
        scheduled = now if manual else float(firing.due or now)
        run_id = _record_run(
            db,
            job,
            scheduled,
            now,
            "running" if firing.run else "skipped",
            "" if firing.run else f"missed by {now - scheduled:.0f}s (misfire: skip)",
            manual,
        )
        if not firing.run:
            continue
        message_id = db.execute(
            "INSERT INTO messages (channel, chat_id, thread, sender_id, platform_id, text,"
            " received_at, status, agent_id) VALUES (?,?, '', 'scheduler', ?,?,?, 'queued', ?)",
            (JOB_CHANNEL, job["name"], f"run-{run_id}", job["task"], now, job["agent_id"]),
        ).lastrowid
        db.execute("UPDATE job_runs SET message_id=? WHERE id=?", (message_id, run_id))
        db.execute("UPDATE jobs SET running_run=? WHERE agent_id=? AND name=?", (run_id, *key))
        fired.append((job["name"], job["agent_id"]))
    return fired


def _record_run(
    db: sqlite3.Connection,
    job: sqlite3.Row,
    scheduled: float,
    now: float,
    status: str,
    error: str,
    manual: bool,
) -> int:
    run_id = db.execute(
        "INSERT INTO job_runs (agent_id, job, scheduled_for, fired_at, status, error, manual,"
        " deliver_channel, deliver_chat, deliver_thread) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            job["agent_id"],
            job["name"],
            scheduled,
            now,
            status,
            error,
            manual,
            job["deliver_channel"],
            job["deliver_chat"],
            job["deliver_thread"],
        ),
    ).lastrowid
    assert run_id is not None
    return run_id


def _deliver_to(job: sqlite3.Row) -> Address:
    return Address(job["deliver_channel"], job["deliver_chat"], job["deliver_thread"])


def _delivery_refused(db: sqlite3.Connection, agent_id: str, to: Address) -> str | None:
    """Why ``agent_id`` may no longer write to ``to`` (its chat is not paired with it), or None.
    The CLI's chat id names its agent (``router.route``); every other chat needs its pairing."""
    if to.channel == "cli":
        paired = to.chat == agent_id
    else:
        row = db.execute("SELECT agent_id FROM pairings WHERE address=?", (to.chat_address,))
        found = row.fetchone()
        paired = found is not None and found[0] == agent_id
    return None if paired else f"{to.chat_address} is no longer paired with {agent_id}"


def _job_unpaired(refused: str, agent_id: str, name: str, to: Address) -> str:
    return (
        f"{refused}; pair it again (clawpen pair {to.chat_address} {agent_id}) and"
        f" clawpen jobs resume {agent_id}/{name}, or remove the job"
    )


def _pause_unpaired(db: sqlite3.Connection, job: sqlite3.Row, reason: str, now: float) -> None:
    """The job's chat left its agent: a skipped run says so in its history, and the job waits
    paused (with the reason ``clawpen jobs list`` shows) until the operator decides."""
    _record_run(db, job, float(job["next_run"] or now), now, "skipped", reason, False)
    db.execute(
        "UPDATE jobs SET state='paused', paused_reason=? WHERE agent_id=? AND name=?",
        (reason, job["agent_id"], job["name"]),
    )


def _finish_job_run(
    db: sqlite3.Connection, agent_id: str, name: str, text: str, error: str | None, now: float
) -> tuple[Address, str, str | None]:
    """Close a job's run with its task: count a failure (pausing the job after too many in a
    row, and saying so in the answer) or clear the count; the answer goes to deliver_to, unless
    that chat is no longer paired with the agent: then the run fails, the job pauses, and the
    third value says why the answer must not be sent."""
    run = db.execute(
        "SELECT * FROM job_runs WHERE agent_id=? AND job=? AND status='running' ORDER BY id"
        " LIMIT 1",
        (agent_id, name),
    ).fetchone()
    if run is None:  # pragma: no cover  (a run is recorded before its message exists)
        raise sqlite3.IntegrityError(f"no running run of job {agent_id}/{name}")
    address = Address(run["deliver_channel"], run["deliver_chat"], run["deliver_thread"])
    refused = _delivery_refused(db, agent_id, address)
    if refused is not None:
        error = refused
    db.execute(
        "UPDATE job_runs SET status=?, error=?, finished_at=? WHERE id=?",
        ("failed" if error else "ok", error or "", now, run["id"]),
    )
    key = (agent_id, name)
    db.execute(
        "UPDATE jobs SET running_run=NULL, failures=CASE WHEN ? THEN failures+1 ELSE 0 END"
        " WHERE agent_id=? AND name=? AND running_run=?",
        (error is not None, *key, run["id"]),
    )
    job = db.execute(
        "SELECT failures, max_failures, state FROM jobs WHERE agent_id=? AND name=?", key
    ).fetchone()
    if refused is not None:
        db.execute(
            "UPDATE jobs SET state='paused', paused_reason=? WHERE agent_id=? AND name=?",
            (_job_unpaired(refused, agent_id, name, address), *key),
        )
        return address, text, refused
    if (
        error
        and job is not None
        and job["state"] == "active"
        and job["failures"] >= job["max_failures"]
    ):
        reason = f"paused after {job['failures']} failed runs in a row"
        db.execute(
            "UPDATE jobs SET state='paused', paused_reason=? WHERE agent_id=? AND name=?",
            (reason, *key),
        )
        text += (
            f"\n\nThe job {name} failed {job['failures']} times in a row, so it is paused."
            f" Resume it with: clawpen jobs resume {agent_id}/{name}"
        )
    return address, text, None


def _job(row: sqlite3.Row) -> Job:
    spec = JobSpec(
        name=row["name"],
        agent_id=row["agent_id"],
        kind=row["kind"],
        spec=row["spec"],
        timezone=row["timezone"],
        task=row["task"],
        deliver_to=Address(row["deliver_channel"], row["deliver_chat"], row["deliver_thread"]),
        misfire=row["misfire"],
        max_failures=row["max_failures"],
        source=row["source"],
    )
    return Job(
        spec=spec,
        state=row["state"],
        next_run=row["next_run"],
        failures=row["failures"],
        running=row["running_run"] is not None,
        paused_reason=row["paused_reason"],
        last_status=row["last_status"] or "",
        last_error=row["last_error"] or "",
        last_run_at=row["last_at"],
    )


def _job_run(row: sqlite3.Row) -> JobRun:
    return JobRun(
        id=row["id"],
        job=row["job"],
        scheduled_for=row["scheduled_for"],
        fired_at=row["fired_at"],
        status=row["status"],
        error=row["error"],
        finished_at=row["finished_at"],
        manual=bool(row["manual"]),
    )
