"""The threads that own the SQLite connections, so the event loop never waits on the disk.

The writer runs every write that queued up while the previous commit was syncing as one
transaction (group commit), each write in a savepoint of its own so that one bad write fails
alone; one fsync then commits them all. The reader runs reads on a connection of its own (WAL
lets them go on while the writer commits). Outcomes go back to each waiter's event loop, a few
per turn of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import StoreError, StoreRejected, StoreUnavailable

T = TypeVar("T")
MAX_BATCH = 512  # writes per transaction: bounds how long one commit holds the others
WAKE_AT_ONCE = 16  # waiters resumed per turn of the event loop: a big batch must not hold it

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
class Op(Generic[T]):
    """One read or write, run on a store thread; its future is resolved on its own loop."""

    run: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    result: Any = None
    error: BaseException | None = None


def resolve(ops: list[Op[Any]]) -> None:
    """On the event loop: hand each op's outcome to its waiter (if it still waits), a few per
    turn of the loop, so that a batch of hundreds resumes its waiters in slices with the loop's
    other work (timers, sockets) in between."""
    if len(ops) > WAKE_AT_ONCE:
        asyncio.get_running_loop().call_soon(resolve, ops[WAKE_AT_ONCE:])
        ops = ops[:WAKE_AT_ONCE]
    for op in ops:
        if op.future.done():
            continue
        if op.error is not None:
            op.future.set_exception(op.error)
        else:
            op.future.set_result(op.result)


@dataclass
class Worker:
    """A thread that owns one connection and runs ops from its queue.

    The writer (``transactional``) runs every op that queued up as one transaction, each in its
    own savepoint; one fsync then commits them all. The reader runs ops one by one."""

    name: str
    db: sqlite3.Connection
    path: Path
    transactional: bool
    ops: queue.SimpleQueue[Op[Any] | None] = field(default_factory=queue.SimpleQueue)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()

    def submit(self, run: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.ops.put(Op(run, loop, future))
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
            by_loop: dict[asyncio.AbstractEventLoop, list[Op[Any]]] = {}
            for op in batch:
                by_loop.setdefault(op.loop, []).append(op)
            for loop, ops in by_loop.items():  # one wake-up per loop and batch, not per op
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(resolve, ops)

    def _run(self, op: Op[Any]) -> None:
        try:
            op.result = op.run(self.db)
        except Exception as exc:
            op.error = classify(exc, self.path)

    def _transaction(self, batch: list[Op[Any]]) -> None:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for op in batch:
                op.error = classify(exc, self.path)
            return
        if len(batch) == 1:  # alone: the transaction is its savepoint (two statements fewer)
            self._alone(batch[0])
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

    def _alone(self, op: Op[Any]) -> None:
        """One write in a transaction of its own: committed, or rolled back with its error."""
        db = self.db
        try:
            op.result = op.run(db)
        except Exception as exc:
            op.error = classify(exc, self.path)
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as undo:
                    self._fail_all([op], undo)
            return
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail_all([op], exc)

    def _fail_all(self, batch: list[Op[Any]], exc: BaseException) -> None:
        """Nothing of this batch was committed: every op gets the error."""
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
        error = classify(exc, self.path)
        for op in batch:
            op.result = None
            if op.error is None or isinstance(error, StoreUnavailable):
                op.error = error


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db
