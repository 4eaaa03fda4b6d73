"""The two connections every family of queries runs on: open, migrate, read, write, close.

Writes and reads run on threads of their own (``worker.py``: group commit, a savepoint per
write); each family (``messages.py``, ``tasks.py``, ...) is a mixin on ``Connection`` whose
writes are plain functions of a connection, run on the writer thread in their own savepoint.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..migrations import MIGRATIONS
from ..worker import Worker, classify, connect
from .rows import Args, Mapper, read_all

T = TypeVar("T")


class Connection:
    """The store's file, its writer and its reader. Open it from the event loop's thread."""

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

    def _read_all(self, sql: str, args: Args, mapper: Mapper[T]) -> asyncio.Future[list[T]]:
        """Every row of one query, each mapped (``rows.read_all``), on the reader thread."""
        return self._read(lambda db: read_all(db, sql, args, mapper))
