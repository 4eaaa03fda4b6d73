"""The adapter process: ``python -m clawpen.channels.runner FD CHANNEL [--uid UID]``, started
by ``process.py``.

It loads its platform's code, drops to its own uid, says ``ready``, and only then reads its
settings (with its credential) from the socket on FD; it runs the
platform's adapter, and bridges it to the core: each message the adapter accepts goes to the
core as a frame, and the adapter's ``accept`` returns only when the core says it is committed
(so the platform is acknowledged after the commit, across the process boundary too); each send
the core asks for is done and answered. When the core goes away (its end of the socket closes),
this process ends.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # structlog imports rich when it is installed (for tracebacks on a terminal); an adapter
    # process logs JSON lines, and rich's modules would cost each one megabytes for nothing
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]

import asyncio
import contextlib
import importlib
import itertools
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Coroutine
from typing import Any

import uvloop

from .. import netenv
from ..errors import StoreUnavailable
from ..models import Address, CardTap, Decision, InboundMessage, OutboundMessage, TapOutcome
from ..netenv import CABundleError
from ..obs import logging as clawpen_logging
from ..ports.limits import raise_open_files_limit
from . import wire
from .base import (
    HOST_NAME_MODULES,
    Channel,
    ChannelFatal,
    DeliveryStatus,
    SendError,
    edit_card,
)
from .reach import Reachability, endpoint_of, keep_reaching
from .registry import plugin_named

EXIT_FATAL = 3


class Bridge:
    """The adapter's side of the socket."""

    def __init__(self, channel: str, writer: asyncio.StreamWriter) -> None:
        self.channel = channel
        self.writer = writer
        self.log = clawpen_logging.get_logger()
        self._accepts: dict[int, asyncio.Future[Decision | None]] = {}
        self._taps: dict[int, asyncio.Future[TapOutcome]] = {}
        self._ids = itertools.count(1)
        self.reach: Reachability | None = None

    async def connected(self) -> None:
        """The adapter talked to its platform (``base.connected``)."""
        if self.reach is not None:
            await self.reach.connected()

    async def report_reach(self, state: str, error: str) -> None:
        self.writer.write(wire.encode(wire.reach_frame(state, error)))

    async def accept(self, message: InboundMessage) -> Decision | None:
        """Hand a message to the core; returns once it is committed there."""
        request_id = next(self._ids)
        future: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        self._accepts[request_id] = future
        try:
            self.writer.write(wire.encode(wire.inbound_frame(request_id, message)))
            return await future
        finally:
            self._accepts.pop(request_id, None)

    __call__ = accept  # the adapter is handed the bridge itself as its ``accept``

    async def tap(self, tap: CardTap) -> TapOutcome:
        """Hand a button tap to the core; returns what to show the tapper and on the card."""
        request_id = next(self._ids)
        future: asyncio.Future[TapOutcome] = asyncio.get_running_loop().create_future()
        self._taps[request_id] = future
        try:
            self.writer.write(wire.encode(wire.tap_frame(request_id, tap)))
            return await future
        finally:
            self._taps.pop(request_id, None)

    async def delivery_status(self, status: DeliveryStatus) -> None:
        """Pass a platform's later word on a sent message to the core (not answered)."""
        self.writer.write(wire.encode(wire.status_frame(status)))

    async def serve(self, reader: asyncio.StreamReader, adapter: Channel) -> None:
        """Answer the core's frames until it hangs up."""
        async with asyncio.TaskGroup() as sends:
            while (frame := await wire.read_frame(reader)) is not None:
                kind = frame["type"]
                if kind == "accepted":
                    request_id, decision = wire.parse_accepted(frame)
                    self._settle(request_id, decision)
                elif kind == "not_accepted":
                    request_id, error = wire.parse_not_accepted(frame)
                    self._settle(request_id, StoreUnavailable(error or "the store is unavailable"))
                elif kind == "send":
                    request_id, message = wire.parse_send(frame, self.channel)
                    sends.create_task(self._send(adapter, request_id, message))
                elif kind == "edit":
                    request_id, address, platform_id, text = wire.parse_edit(frame, self.channel)
                    edit = edit_card(adapter, address, platform_id, text)
                    sends.create_task(self._send_or_edit(request_id, edit, platform_id))
                elif kind == "tap_result":
                    request_id, outcome = wire.parse_tap_result(frame)
                    tapped = self._taps.get(request_id)
                    if tapped is not None and not tapped.done():
                        tapped.set_result(outcome)
                elif kind == "send_file":
                    request_id, file = wire.parse_send_file(frame, self.channel)
                    sends.create_task(self._send_or_edit(request_id, adapter.send_file(file)))
                elif kind == "typing":
                    address, message_id, active = wire.parse_typing(frame, self.channel)
                    sends.create_task(self._typing(adapter, address, message_id, active))
            raise EOFError("the orchestrator closed the socket")

    async def _typing(
        self, adapter: Channel, address: Address, message_id: str, active: bool
    ) -> None:
        try:
            await adapter.typing(address, message_id, active)
        except Exception as exc:  # best effort: a missing indicator costs nobody a message
            self.log.debug("channel_typing_failed", channel=self.channel, error=str(exc))

    def _settle(self, request_id: int, outcome: Decision | BaseException | None) -> None:
        """A message's (or, when not accepted, a tap's) answer to whoever waits for it."""
        future: asyncio.Future[Any] | None = self._accepts.get(request_id)
        if future is None and isinstance(outcome, BaseException):
            future = self._taps.get(request_id)  # ids are shared: a tap is one of them
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    async def _send(self, adapter: Channel, request_id: int, message: OutboundMessage) -> None:
        await self._send_or_edit(request_id, adapter.send(message))

    async def _send_or_edit(
        self, request_id: int, work: Awaitable[str | None], platform_id: str = ""
    ) -> None:
        try:
            done = await work
            frame = wire.sent_frame(request_id, done if isinstance(done, str) else platform_id)
        except SendError as exc:
            frame = wire.send_failed_frame(request_id, exc)
        except Exception as exc:  # the adapter's error on this message: retried, never an outage
            self.log.exception("channel_send_error", channel=self.channel)
            failure = SendError(f"{type(exc).__name__}: {exc}", about_message=True)
            frame = wire.send_failed_frame(request_id, failure)
        self.writer.write(wire.encode(frame))


def drop_privileges(uid: int) -> None:
    """Become ``uid`` (its own group, no others) for good: from here on this process cannot
    read data_dir (0700, root's) nor trace another adapter (another uid), and the kernel marks
    it undumpable."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit(f"could not drop to uid {uid}")


async def serve(fd: int, name: str, uid: int | None = None) -> int:
    """Load the platform's code, drop to ``uid``, say ``ready``, and only then read the start
    frame that carries the credential: the token never enters a process that still holds
    root's rights (and the core sends it only once it has seen our uid change)."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=wire.MAX_CORE_FRAME)
    log = clawpen_logging.get_logger().bind(channel=name)
    plugin = plugin_named(name)
    for module in (*HOST_NAME_MODULES, *plugin.preload):
        importlib.import_module(module)
    try:
        netenv.current().ssl_context()  # the CA bundle is read now, while we still may
    except CABundleError as exc:
        writer.write(wire.encode(wire.fatal_frame(str(exc))))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        log.error("channel_fatal", error=str(exc))
        return EXIT_FATAL
    if uid is not None:
        drop_privileges(uid)
    writer.write(wire.encode(wire.ready_frame()))
    start = await wire.read_frame(reader)
    if start is None or start["type"] != "start" or start.get("channel") != name:
        return 2
    settings = plugin.settings.model_validate(start["settings"])
    del start  # the credential stays in the adapter only
    adapter = plugin.adapter(settings)
    bridge = Bridge(name, writer)
    bridge.reach = reach = Reachability(name, endpoint_of(settings), bridge.report_reach)
    code = 0
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(keep_reaching(lambda: adapter.run(bridge), reach))
            group.create_task(bridge.serve(reader, adapter))
    except* ChannelFatal as fatal:
        error = str(fatal.exceptions[0])
        writer.write(wire.encode(wire.fatal_frame(error)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        log.error("channel_fatal", error=error)
        code = EXIT_FATAL
    except* (EOFError, ConnectionError):
        pass  # the orchestrator is gone or stopping us
    except* wire.FrameError as broken:
        log.error("channel_protocol_error", error=str(broken.exceptions[0]))
        code = 2
    return code


def main() -> None:
    fd, channel = int(sys.argv[1]), sys.argv[2]
    uid = int(sys.argv[4]) if sys.argv[3:4] == ["--uid"] else None
    sys.exit(run(fd, channel, uid, os.environ.get("CLAWPEN_LOG_LEVEL", "info")))


def run(fd: int, channel: str, uid: int | None, log_level: str) -> int:
    """The adapter on socket ``fd``, to its end; its exit code. An exec'd adapter (``main``)
    and one forked by the zygote (``zygote.py``) both run this."""
    clawpen_logging.configure(log_level)
    raise_open_files_limit()  # a webhook's caps are sized well below it
    code = 0
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        code = uvloop.run(until_terminated(serve(fd, channel, uid)))
    return code


async def until_terminated(work: Coroutine[Any, Any, int]) -> int:
    """SIGTERM (the orchestrator stopping us) ends ``work`` as a cancellation, cleanly."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


if __name__ == "__main__":
    main()
