"""A hostile web server for web_fetch's tests: it sends its status line one byte at a time,
forever, for as long as the client stays (the attack of issue 23, at test speed).

It counts the connections it was given and those the client dropped, and wakes whoever waits
on a count (``wait_until``), so a test waits for the event, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

STATUS = b"HTTP/1.1 200 "


class SlowLoris:
    def __init__(self, every: float = 0.1) -> None:
        self.every = every  # seconds between two bytes
        self.opened = 0
        self.dropped = 0  # connections the client closed
        self.port = 0
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1") -> SlowLoris:
        self._server = await asyncio.start_server(self._serve, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # frees a client still reading (a thread, before the fix)
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_until(self, condition: Callable[[SlowLoris], bool], timeout: float) -> None:
        """Until ``condition(self)`` holds; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: condition(self))

    async def _count(self, opened: int = 0, dropped: int = 0) -> None:
        async with self._changed:
            self.opened += opened
            self.dropped += dropped
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._count(opened=1)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await reader.readuntil(b"\r\n\r\n")  # the request
            sent = 0
            while True:  # the status line never ends: "HTTP/1.1 200 OOOO..."
                writer.write(STATUS[sent : sent + 1] or b"O")
                sent += 1
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if not await asyncio.wait_for(reader.read(1), self.every):
                        break  # the client went away
        except OSError:  # reset by the client
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            if not self._server or self._server.is_serving():
                await self._count(dropped=1)
