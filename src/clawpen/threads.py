"""Blocking work in a pool of its own kind, never in the event loop's shared default pool.

The default pool has ``min(32, CPUs + 4)`` threads: six on two CPUs. When one kind of work
held them all (six web fetches stalled by a slow server, issue 23), every other kind queued
behind it with no error and no log line: no container could start or stop, and the door's
parsing of large model calls hung. So each kind gets a small bounded pool of its own (the
Docker runtime's, the door's parsing, web name lookups), and a stuck kind stalls only itself.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="clawpen-example")
    >>> asyncio.run(run_in(pool, sum, [1, 2]))
    3
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


async def run_in(pool: Executor, function: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread``, in ``pool``: the caller's context variables go along (the log's
    bound fields), and a call cancelled before its turn never runs."""
    call = functools.partial(contextvars.copy_context().run, function, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
