"""The only module that speaks SQL.

SQLite in WAL mode with ``synchronous=FULL``: when a method returns, what it wrote survives a
crash of the process or the machine. The message path is a handful of state changes:

    inbound message:  queued -> claimed (into a task) -> answered | rejected
    task:             running -> done | failed          (running again after a crash)
    reply:            pending -> sent | failed
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .errors import StoreError
from .logging import get_logger
from .models import ClaimedTask, InboundMessage, Rejection, Reply, Route

T = TypeVar("T")

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
]


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise _store_error(exc, self.path) from None

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, args).fetchone()
        return row

    # -- inbound -------------------------------------------------------------------------------

    def record_inbound(self, message: InboundMessage, decision: Route | Rejection) -> int | None:
        """Commit a message with its routing decision; ``None`` if it was seen before."""
        status, agent, reason = (
            ("queued", decision.agent_id, None)
            if isinstance(decision, Route)
            else ("rejected", None, decision.reason)
        )
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO messages (channel, chat_id, sender_id, platform_id, text,"
                " received_at, status, agent_id, reason) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    message.channel,
                    message.chat_id,
                    message.sender_id,
                    message.platform_id,
                    message.text,
                    message.received_at,
                    status,
                    agent,
                    reason,
                ),
            )
            if cursor.rowcount and isinstance(decision, Rejection) and decision.answer:
                self._refuse(db, message, cursor.lastrowid, decision.answer)
        return cursor.lastrowid if cursor.rowcount else None

    def _refuse(
        self, db: sqlite3.Connection, message: InboundMessage, row: int | None, answer: str
    ) -> None:
        """A refused message still gets its answer, through the same reply path as any other."""
        now = time.time()
        task_id = db.execute(
            "INSERT INTO tasks (agent_id, channel, chat_id, status, created_at, finished_at,"
            " error) VALUES ('', ?, ?, 'failed', ?, ?, 'refused')",
            (message.channel, message.chat_id, now, now),
        ).lastrowid
        db.execute("UPDATE messages SET task_id=? WHERE id=?", (task_id, row))
        db.execute(
            "INSERT INTO replies (task_id, channel, chat_id, text, status, created_at)"
            " VALUES (?,?,?,?, 'pending', ?)",
            (task_id, message.channel, message.chat_id, answer, now),
        )

    def claim_next_task(self, agent_id: str, now: float | None = None) -> ClaimedTask | None:
        """Batch every queued message of the agent's oldest waiting conversation into one task."""
        now = time.time() if now is None else now
        with self._write() as db:
            first = db.execute(
                "SELECT channel, chat_id FROM messages WHERE agent_id=? AND status='queued'"
                " ORDER BY id LIMIT 1",
                (agent_id,),
            ).fetchone()
            if first is None:
                return None
            channel, chat_id = first
            task_id = db.execute(
                "INSERT INTO tasks (agent_id, channel, chat_id, status, created_at)"
                " VALUES (?,?,?, 'running', ?)",
                (agent_id, channel, chat_id, now),
            ).lastrowid
            db.execute(
                "UPDATE messages SET status='claimed', task_id=? WHERE agent_id=? AND channel=?"
                " AND chat_id=? AND status='queued'",
                (task_id, agent_id, channel, chat_id),
            )
        assert task_id is not None
        return self._claimed(task_id)

    def _claimed(self, task_id: int) -> ClaimedTask:
        task = self._one("SELECT * FROM tasks WHERE id=?", task_id)
        assert task is not None
        lines = self.db.execute(
            "SELECT sender_id, text FROM messages WHERE task_id=? ORDER BY id", (task_id,)
        ).fetchall()
        return ClaimedTask(
            id=task_id,
            agent_id=task["agent_id"],
            channel=task["channel"],
            chat_id=task["chat_id"],
            senders=tuple(row[0] for row in lines),
            texts=tuple(row[1] for row in lines),
            attempts=task["attempts"],
        )

    def running_tasks(self, agent_id: str) -> list[ClaimedTask]:
        """The agent's tasks that were in flight when the orchestrator stopped: to run again."""
        rows = self.db.execute(
            "SELECT id FROM tasks WHERE status='running' AND agent_id=? ORDER BY id", (agent_id,)
        )
        return [self._claimed(row[0]) for row in rows.fetchall()]

    def retry_task(self, task_id: int) -> int:
        """Count one more attempt at a task; returns the attempt number."""
        with self._write() as db:
            db.execute("UPDATE tasks SET attempts = attempts + 1 WHERE id=?", (task_id,))
        row = self._one("SELECT attempts FROM tasks WHERE id=?", task_id)
        assert row is not None
        return int(row[0])

    # -- outcome and replies --------------------------------------------------------------------

    def finish_task(
        self, task_id: int, text: str, error: str | None = None, now: float | None = None
    ) -> Reply:
        """Close a task and commit its reply in one transaction: no answer without a reply row."""
        now = time.time() if now is None else now
        with self._write() as db:
            task = db.execute(
                "SELECT channel, chat_id FROM tasks WHERE id=?", (task_id,)
            ).fetchone()
            db.execute(
                "UPDATE tasks SET status=?, finished_at=?, error=? WHERE id=?",
                ("failed" if error else "done", now, error, task_id),
            )
            db.execute("UPDATE messages SET status='answered' WHERE task_id=?", (task_id,))
            db.execute(
                "INSERT OR IGNORE INTO replies (task_id, channel, chat_id, text, status,"
                " created_at) VALUES (?,?,?,?, 'pending', ?)",
                (task_id, task["channel"], task["chat_id"], text, now),
            )
        reply = self._one("SELECT * FROM replies WHERE task_id=?", task_id)
        assert reply is not None
        return _reply(reply)

    def pending_replies(self, channel: str | None = None) -> list[Reply]:
        rows = self.db.execute(
            "SELECT * FROM replies WHERE status='pending' AND (?1 IS NULL OR channel=?1)"
            " ORDER BY id",
            (channel,),
        )
        return [_reply(row) for row in rows.fetchall()]

    def record_chunk_sent(self, reply_id: int, platform_id: str, done: bool) -> None:
        """One more chunk of a reply reached the platform; ``done`` when it was the last."""
        with self._write() as db:
            db.execute(
                "UPDATE replies SET chunks_sent=chunks_sent+1,"
                " platform_ids=ltrim(coalesce(platform_ids, '') || ',' || ?1, ','),"
                " status=CASE WHEN ?2 THEN 'sent' ELSE status END,"
                " sent_at=CASE WHEN ?2 THEN ?3 ELSE sent_at END WHERE id=?4",
                (platform_id, done, time.time(), reply_id),
            )

    def mark_reply_failed(self, reply_id: int, error: str, final: bool) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE replies SET attempts=attempts+1, error=?, status=? WHERE id=?",
                (error, "failed" if final else "pending", reply_id),
            )

    # -- agents, usage, settings ----------------------------------------------------------------

    def set_agent_state(self, agent_id: str, state: str, container_id: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO agents (id, container_id, state, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET container_id=excluded.container_id,"
                " state=excluded.state, updated_at=excluded.updated_at",
                (agent_id, container_id, state, time.time()),
            )

    def tokens_used_since(self, agent_id: str, since: float) -> int:
        row = self._one(
            "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM usage"
            " WHERE agent_id=? AND at>=?",
            agent_id,
            since,
        )
        return int(row[0]) if row else 0

    def record_usage(
        self, agent_id: str, model: str, input_tokens: int, output_tokens: int
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO usage (agent_id, model, input_tokens, output_tokens, at)"
                " VALUES (?,?,?,?,?)",
                (agent_id, model, input_tokens, output_tokens, time.time()),
            )

    def sync_config_pairings(self, pairings: dict[str, str]) -> None:
        """Make the config file's pairings exactly those with source 'config'."""
        with self._write() as db:
            db.execute("DELETE FROM pairings WHERE source='config'")
            db.executemany(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'config', ?)",
                [(address, agent, time.time()) for address, agent in pairings.items()],
            )

    def pair(self, address: str, agent_id: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO pairings (address, agent_id, source, created_at)"
                " VALUES (?,?, 'cli', ?)",
                (address, agent_id, time.time()),
            )

    def unpair(self, address: str) -> bool:
        with self._write() as db:
            removed = db.execute("DELETE FROM pairings WHERE address=?", (address,)).rowcount
        return bool(removed)

    def pairings(self) -> dict[str, str]:
        rows = self.db.execute("SELECT address, agent_id FROM pairings ORDER BY address")
        return {row[0]: row[1] for row in rows}

    def counts(self) -> dict[str, int]:
        """Row counts by table and status, for ``clawpen status`` and tests."""
        out: dict[str, int] = {}
        for table in ("messages", "tasks", "replies"):
            for status, n in self.db.execute(
                f"SELECT status, COUNT(*) FROM {table} GROUP BY status"
            ):
                out[f"{table}.{status}"] = n
        return out

    def replies_for(self, channel: str, chat_id: str) -> list[Reply]:
        rows = self.db.execute(
            "SELECT * FROM replies WHERE channel=? AND chat_id=? ORDER BY id", (channel, chat_id)
        )
        return [_reply(row) for row in rows.fetchall()]


async def until_written(write: Callable[[], T], what: str) -> T:
    """Retry a store write until it succeeds (the disk may be full for a while). The work it
    records is already done and must not be lost or done again."""
    delay = 0.5
    while True:
        try:
            return write()
        except StoreError as exc:
            get_logger().error("store_unwritable", what=what, error=str(exc), retryIn=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def _reply(row: sqlite3.Row) -> Reply:
    return Reply(
        id=row["id"],
        task_id=row["task_id"],
        channel=row["channel"],
        chat_id=row["chat_id"],
        text=row["text"],
        attempts=row["attempts"],
        chunks_sent=row["chunks_sent"],
    )


def _store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    text = str(exc)
    if "disk is full" in text or "disk I/O" in text:
        return StoreError(
            f"{path}: cannot write the store ({text})",
            "free disk space; clawpen resumes accepting messages when writes succeed again",
        )
    if "unable to open" in text or "readonly" in text:
        return StoreError(
            f"{path}: cannot open the store ({text})",
            "check that data_dir exists and is writable by this user",
        )
    return StoreError(f"{path}: store error ({text})", "see the log for details")
