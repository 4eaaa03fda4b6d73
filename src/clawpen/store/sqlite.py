"""The SQLite store: the only module that speaks SQL.

WAL mode with ``synchronous=FULL``: when a write's future resolves, what it wrote survives a
crash of the process or the machine. The event loop never waits on the disk: writes go to one
writer thread, which commits everything that queued up while the previous commit was syncing as
one transaction (group commit), each write in a savepoint of its own so that one bad write
fails alone. Reads run on a second thread with its own connection (WAL lets them go on while
the writer commits). The state machines are in ``base.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..models import Address, ClaimedTask, Decision, InboundMessage, Rejection, Reply, Stranger
from .base import Lease, StoreError, StoreRejected, StoreUnavailable

T = TypeVar("T")
MAX_BATCH = 512  # writes per transaction: bounds how long one commit holds the others
WAKE_AT_ONCE = 16  # waiters resumed per turn of the event loop: a big batch must not hold it

MIGRATIONS: list[str] = [
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        status TEXT NOT NULL,            -- queued | claimed | answered | rejected
        agent_id TEXT,
        reason TEXT,
        task_id INTEGER,
        UNIQUE (channel, chat_id, platform_id)
    );
    CREATE INDEX messages_queue ON messages (agent_id, status, id);
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        status TEXT NOT NULL,            -- running | done | failed
        attempts INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE replies (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL,            -- pending | sent | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        sent_at REAL,
        platform_ids TEXT,
        error TEXT
    );
    CREATE INDEX replies_pending ON replies (status, id);
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        container_id TEXT,
        state TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: replies are delivered chunk by chunk, each recorded as the platform confirms it
    """
    ALTER TABLE replies ADD COLUMN chunks_sent INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX usage_by_agent ON usage (agent_id, at);
    """,
    # 3: pairings live here; the config file's are restored at every start
    """
    CREATE TABLE pairings (
        address TEXT PRIMARY KEY,        -- channel:chat_id
        agent_id TEXT NOT NULL,
        source TEXT NOT NULL,            -- config | cli
        created_at REAL NOT NULL
    );
    """,
    # 4: Telegram keeps unconfirmed updates itself; its offset needs no storage here
    """
    DROP TABLE kv;
    """,
    # 5: a conversation is an address (channel, chat, thread); claimed work has an owner and a
    #    lease; replies are due at next_attempt_at; strangers are kept as metadata, never text
    """
    ALTER TABLE messages ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN owner TEXT;
    ALTER TABLE tasks ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_by_agent ON tasks (agent_id, status, id);
    ALTER TABLE replies ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE replies ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
    ALTER TABLE replies ADD COLUMN next_attempt_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE replies ADD COLUMN owner TEXT;
    ALTER TABLE replies ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    DROP INDEX replies_pending;
    CREATE INDEX replies_pending ON replies (channel, status, id);
    CREATE TABLE strangers (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        size INTEGER NOT NULL,           -- characters of text; the text itself is not kept
        received_at REAL NOT NULL
    );
    CREATE INDEX strangers_by_time ON strangers (received_at);
    INSERT INTO strangers (channel, chat_id, sender_id, size, received_at)
        SELECT channel, chat_id, sender_id, length(text), received_at FROM messages
        WHERE status = 'rejected' AND task_id IS NULL;
    DELETE FROM messages WHERE status = 'rejected' AND task_id IS NULL;
    """,
]

# SQLite's primary result codes that mean "not now" rather than "never"
_TRANSIENT_CODES = {
    5,  # SQLITE_BUSY
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY (permissions, a remount)
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
}


def classify(exc: BaseException, path: Path) -> StoreError:
    """A transient ``StoreUnavailable`` or a permanent ``StoreRejected``, with the fix."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _TRANSIENT_CODES:
        if code & 0xFF in (8, 14):
            fix = "check that data_dir exists and is writable by this user"
        elif code & 0xFF in (5, 6):
            fix = "another process holds the database; clawpen retries"
        else:
            fix = "free disk space; clawpen resumes when writes succeed again"
        return StoreUnavailable(f"{path}: cannot write the store ({exc})", fix)
    return StoreRejected(
        f"{path}: the store refused a write ({type(exc).__name__}: {exc})",
        "this is a bug or bad data; the work it belonged to was failed and reported",
    )


@dataclass
class _Op(Generic[T]):
    """One read or write, run on a store thread; its future is resolved on its own loop."""

    run: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    result: Any = None
    error: BaseException | None = None


def _resolve(ops: list[_Op[Any]]) -> None:
    """On the event loop: hand each op's outcome to its waiter (if it still waits), a few per
    turn of the loop, so that a batch of hundreds resumes its waiters in slices with the loop's
    other work (timers, sockets) in between."""
    if len(ops) > WAKE_AT_ONCE:
        asyncio.get_running_loop().call_soon(_resolve, ops[WAKE_AT_ONCE:])
        ops = ops[:WAKE_AT_ONCE]
    for op in ops:
        if op.future.done():
            continue
        if op.error is not None:
            op.future.set_exception(op.error)
        else:
            op.future.set_result(op.result)


@dataclass
class _Worker:
    """A thread that owns one connection and runs ops from its queue.

    The writer (``transactional``) runs every op that queued up as one transaction, each in its
    own savepoint; one fsync then commits them all. The reader runs ops one by one."""

    name: str
    db: sqlite3.Connection
    path: Path
    transactional: bool
    ops: queue.SimpleQueue[_Op[Any] | None] = field(default_factory=queue.SimpleQueue)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()

    def submit(self, run: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.ops.put(_Op(run, loop, future))
        return future

    def stop(self) -> None:
        self.ops.put(None)
        if self.thread is not None:
            self.thread.join()
        self.db.close()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self.ops.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    op = self.ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stopping = True
                    break
                batch.append(op)
            if self.transactional:
                self._transaction(batch)
            else:
                for op in batch:
                    self._run(op)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Op[Any]]] = {}
            for op in batch:
                by_loop.setdefault(op.loop, []).append(op)
            for loop, ops in by_loop.items():  # one wake-up per loop and batch, not per op
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_resolve, ops)

    def _run(self, op: _Op[Any]) -> None:
        try:
            op.result = op.run(self.db)
        except Exception as exc:
            op.error = classify(exc, self.path)

    def _transaction(self, batch: list[_Op[Any]]) -> None:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for op in batch:
                op.error = classify(exc, self.path)
            return
        for op in batch:
            try:
                db.execute("SAVEPOINT op")
                op.result = op.run(db)
                db.execute("RELEASE op")
            except Exception as exc:
                op.error = classify(exc, self.path)
                if not db.in_transaction:  # SQLite rolled the whole transaction back (full disk)
                    self._fail_all(batch, exc)
                    return
                try:
                    db.execute("ROLLBACK TO op")
                    db.execute("RELEASE op")
                except sqlite3.Error as undo:
                    self._fail_all(batch, undo)
                    return
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail_all(batch, exc)

    def _fail_all(self, batch: list[_Op[Any]], exc: BaseException) -> None:
        """Nothing of this batch was committed: every op gets the error."""
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
        error = classify(exc, self.path)
        for op in batch:
            op.result = None
            if op.error is None or isinstance(error, StoreUnavailable):
                op.error = error


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class SQLiteStore:
    """``Store`` on one SQLite file. Open it from the thread that runs the event loop."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            writer = _connect(self.path)
            self._migrate(writer)
            reader = _connect(self.path)
            reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise classify(exc, self.path) from None
        self._writer = _Worker("store-writer", writer, self.path, transactional=True)
        self._reader = _Worker("store-reader", reader, self.path, transactional=False)
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

    async def record_send_failure(
        self, reply_id: int, error: str, final: bool, next_attempt_at: float
    ) -> None:
        def record(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE replies SET attempts=attempts+1, error=?, status=?, next_attempt_at=?"
                " WHERE id=?",
                (error, "failed" if final else "pending", next_attempt_at, reply_id),
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
        self, agent_id: str, model: str, input_tokens: int, output_tokens: int, now: float
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage (agent_id, model, input_tokens, output_tokens, at)"
                " VALUES (?,?,?,?,?)",
                (agent_id, model, input_tokens, output_tokens, now),
            )
        )

    async def tokens_used_since(self, agent_id: str, since: float) -> int:
        def used(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM usage"
                " WHERE agent_id=? AND at>=?",
                (agent_id, since),
            ).fetchone()
            return int(row[0])

        return await self._read(used)

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
        "SELECT sender_id, text, platform_id FROM messages WHERE task_id=? ORDER BY id",
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
