"""A platform adapter in a child process of its own, holding only its own credential.

The orchestrator holds the model key and every platform's token; a flaw in one adapter (which
parses whatever its platform sends) must expose only that adapter's token. So each adapter is
started fresh (exec, never a fork that would carry our memory), with an environment of its own
(none of ours), as an unprivileged user of its own when we run as root (it cannot read
data_dir, nor the other adapters' memory), and reaches the core only through a socket pair that
says which channel it is. ``ChannelProcess`` speaks for it in the core: it meets the ``Channel``
protocol, so the rest of the orchestrator cannot tell it from an adapter in the same process.

``process_spec`` is the whole of what the child gets, in one pure function.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import StoreUnavailable
from ..models import Address, CardTap, OutboundFile, OutboundMessage
from ..obs.logging import get_logger
from . import wire
from .base import Accept, ChannelFatal, SendError, report_status, report_tap

ADAPTER_UID_BASE = 61_000  # + a number from the channel's name: one uid per platform
SEND_TIMEOUT = 120.0
STOP_GRACE = 5.0
MAX_INBOUND_IN_FLIGHT = 1_000  # frames being committed at once; past it we stop reading
FRAMES_AT_ONCE = 32  # frames handled per turn of the event loop
PASSED_ENV = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")


class AdapterExited(Exception):
    """The adapter process ended without saying it cannot work: restart it."""


@dataclass(frozen=True)
class ProcessSpec:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    user: int | None  # the uid it drops to once its code is loaded; None: we are not root


def adapter_uid(channel: str) -> int:
    return ADAPTER_UID_BASE + zlib.crc32(channel.encode()) % 1000


def process_spec(
    channel: str,
    fd: int,
    python: str,
    package_root: str,
    euid: int,
    parent_env: Mapping[str, str],
    log_level: str = "info",
) -> ProcessSpec:
    """The adapter's command, environment, directory and user.

    Nothing of our environment is passed on but proxy settings (the model key or another
    platform's token may be in it); the credential comes over the socket, after the start.
    It starts as us and drops to its own uid itself, once its code is loaded: the Python it runs
    on may live where that uid cannot read (a root-only /root/.pyenv, a checkout in /root)."""
    uid = adapter_uid(channel) if euid == 0 else None
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": package_root,  # the very code we run, whatever way it was installed
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "CLAWPEN_LOG_LEVEL": log_level,
        **{k: v for k in PASSED_ENV if (v := parent_env.get(k))},
    }
    argv: tuple[str, ...] = (python, "-m", "clawpen.channels.runner", str(fd))
    if uid is not None:
        argv += ("--uid", str(uid))
    return ProcessSpec(argv=argv, env=env, cwd="/", user=uid)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class ChannelProcess:
    """Runs one adapter as a child process for as long as ``run`` runs (the orchestrator
    restarts ``run`` when it raises, and disables the channel on ``ChannelFatal``)."""

    def __init__(
        self, name: str, settings: BaseModel, max_message_length: int, log_level: str = "info"
    ) -> None:
        self.name = name
        self.log_level = log_level
        self.settings = settings
        self.max_message_length = max_message_length
        self.log = get_logger()
        self.pid: int | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sends: dict[int, asyncio.Future[str]] = {}
        self._ids = itertools.count(1)

    async def run(self, accept: Accept) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        spec = process_spec(
            self.name,
            theirs.fileno(),
            sys.executable,
            _package_root(),
            os.geteuid(),
            os.environ,
            self.log_level,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C in our terminal is ours to pass on, or not
            )
        finally:
            theirs.close()
        self.pid = process.pid
        self.log.info("channel_started", channel=self.name, pid=process.pid, uid=spec.user)
        fatal: str | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=wire.MAX_FRAME)
            self._writer = writer
            settings = self.settings.model_dump(mode="json")
            writer.write(wire.encode(wire.start_frame(self.name, settings)))
            async with asyncio.TaskGroup() as group:
                group.create_task(self._relay_stderr(process))
                fatal = await self._serve(reader, accept, group)
                group.create_task(self._stop(process))
        finally:
            self._writer = None
            self._fail_sends(f"the {self.name} adapter process ended")
            ours.close()
            if process.returncode is None:
                await self._stop(process)
            self.pid = None
        if fatal is not None:
            raise ChannelFatal(fatal)
        raise AdapterExited(f"the {self.name} adapter exited with code {process.returncode}")

    async def _serve(
        self, reader: asyncio.StreamReader, accept: Accept, group: asyncio.TaskGroup
    ) -> str | None:
        """Read the adapter's frames until it hangs up; returns its fatal error, if it sent
        one. A broken frame ends the adapter (it is restarted): it is not to be believed."""
        in_flight = asyncio.Semaphore(MAX_INBOUND_IN_FLIGHT)
        count = 0
        while True:
            count += 1
            if count % FRAMES_AT_ONCE == 0:
                await asyncio.sleep(0)  # buffered frames return at once: let the loop breathe
            try:
                frame = await wire.read_frame(reader)
            except wire.FrameError as exc:
                self.log.error("channel_protocol_error", channel=self.name, error=str(exc))
                return None
            if frame is None:
                return None
            kind = frame["type"]
            try:
                if kind == "inbound":
                    request_id, message = wire.parse_inbound(frame, self.name)
                    await in_flight.acquire()
                    group.create_task(self._accept(request_id, message, accept, in_flight))
                elif kind in ("sent", "send_failed"):
                    self._resolve_send(frame)
                elif kind == "status":
                    group.create_task(report_status(accept, wire.parse_status(frame)))
                elif kind == "tap":
                    request_id, tap = wire.parse_tap(frame, self.name)
                    await in_flight.acquire()
                    group.create_task(self._tap(request_id, tap, accept, in_flight))
                elif kind == "fatal":
                    return str(frame.get("error", ""))[: wire.MAX_ERROR] or "fatal error"
                else:
                    raise wire.FrameError(f"unknown frame type {kind[:40]!r}")
            except wire.FrameError as exc:
                self.log.error("channel_protocol_error", channel=self.name, error=str(exc))
                return None

    async def _accept(
        self,
        request_id: int,
        message: Any,
        accept: Accept,
        in_flight: asyncio.Semaphore,
    ) -> None:
        try:
            try:
                decision = await accept(message)
            except StoreUnavailable as exc:
                self._write({"type": "not_accepted", "id": request_id, "error": str(exc)})
                return
            self._write(wire.accepted_frame(request_id, decision))
        finally:
            in_flight.release()

    async def _tap(
        self, request_id: int, tap: CardTap, accept: Accept, in_flight: asyncio.Semaphore
    ) -> None:
        """A button pressed: the core decides what it means; the adapter is told what to
        show. A tap that could not be recorded is answered ``not_accepted``, as a message is:
        the adapter's ``report_tap`` raises ``StoreUnavailable``, and the platform is not told
        we have it (Meta and Telegram hand it out again)."""
        try:
            try:
                outcome = await report_tap(accept, tap)
            except StoreUnavailable as exc:
                self._write({"type": "not_accepted", "id": request_id, "error": str(exc)})
                return
            self._write(wire.tap_result_frame(request_id, outcome))
        finally:
            in_flight.release()

    def _resolve_send(self, frame: wire.Frame) -> None:
        request_id, platform_id, failure = wire.parse_send_outcome(frame)
        future = self._sends.pop(request_id, None)
        if future is None or future.done():
            return  # late, or an id we never used: nothing waits for it
        if failure is not None:
            future.set_exception(failure)
        else:
            assert platform_id is not None
            future.set_result(platform_id)

    def _write(self, frame: wire.Frame) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(wire.encode(frame))

    async def send(self, message: OutboundMessage) -> str:
        return await self._ask(lambda request_id: wire.send_frame(request_id, message))

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        await self._ask(lambda request_id: wire.edit_frame(request_id, address, platform_id, text))

    async def send_file(self, file: OutboundFile) -> str:
        return await self._ask(lambda request_id: wire.send_file_frame(request_id, file))

    async def _ask(self, frame: Callable[[int], wire.Frame]) -> str:
        """Write a frame the adapter answers with ``sent`` or ``send_failed`` (a send of text
        or of a file, an edit); wait for it."""
        if self._writer is None or self._writer.is_closing():
            raise SendError(f"the {self.name} adapter is not running", retry_after=1.0)
        request_id = next(self._ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._sends[request_id] = future
        self._write(frame(request_id))
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                return await future
        except TimeoutError:
            raise SendError(
                f"the {self.name} adapter did not answer within {SEND_TIMEOUT:.0f}s"
            ) from None
        finally:
            self._sends.pop(request_id, None)

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        self._write(wire.typing_frame(address, message_id, active))

    def _fail_sends(self, reason: str) -> None:
        for future in self._sends.values():
            if not future.done():
                future.set_exception(SendError(reason, retry_after=1.0))
        self._sends.clear()

    async def _relay_stderr(self, process: asyncio.subprocess.Process) -> None:
        """What the adapter prints outside its log (a traceback, an import error) joins ours."""
        assert process.stderr is not None
        async for line in process.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                self.log.warning("channel_stderr", channel=self.name, line=text[:2000])

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """Ask it to end (its socket is closing), then make it."""
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
