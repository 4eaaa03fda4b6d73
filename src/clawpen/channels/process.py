"""A platform adapter in a child process of its own, holding only its own credential.

The orchestrator holds the model key and every platform's token; a flaw in one adapter (which
parses whatever its platform sends) must expose only that adapter's token. So each adapter is
started fresh (exec, never a fork that would carry our memory), with an environment of its own
(none of ours), as an unprivileged user of its own when we run as root (it cannot read
data_dir, nor the other adapters' memory), and reaches the core only through a socket pair that
says which channel it is. ``ChannelProcess`` speaks for it in the core: it meets the ``Channel``
protocol, so the rest of the orchestrator cannot tell it from an adapter in the same process.

``process_spec`` is the whole of what the child gets, in one pure function.

With a ``Zygote`` (the orchestrator's default), the adapter is not exec'd itself: the zygote,
exec'd once with that same spec (``zygote.py``), forks it. The libraries every adapter imports
are then loaded once and shared between adapters, copy-on-write; the rest is as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from ..errors import StoreUnavailable
from ..models import Address, CardTap, OutboundFile, OutboundMessage
from ..netenv import NETWORK_ENV
from ..obs.logging import get_logger
from . import wire
from .base import Accept, ChannelFatal, SendError, report_reach, report_status, report_tap

ADAPTER_UID_BASE = 61_000  # + a number from the channel's name: one uid per platform
SEND_TIMEOUT = 120.0
STOP_GRACE = 5.0
READY_TIMEOUT = 60.0  # an adapter's imports, on a loaded machine
MAX_INBOUND_IN_FLIGHT = 1_000  # frames being committed at once; past it we stop reading
FRAMES_AT_ONCE = 32  # frames handled per turn of the event loop
PASSED_ENV = NETWORK_ENV  # proxies and the CA bundle: adapters connect as the rest of us do


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

    Nothing of our environment is passed on but proxy and CA settings (the model key or another
    platform's token may be in it); the credential comes over the socket, after the start.
    It starts as us and drops to its own uid itself, once its code is loaded (the Python it runs
    on may live where that uid cannot read: a root-only /root/.pyenv, a checkout in /root) and
    before it is sent its credential (``ChannelProcess.run`` checks the uid first)."""
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
    argv: tuple[str, ...] = (python, "-m", "clawpen.channels.runner", str(fd), channel)
    if uid is not None:
        argv += ("--uid", str(uid))
    return ProcessSpec(argv=argv, env=env, cwd="/", user=uid)


def process_uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of process ``pid`` (empty: it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return {int(field) for field in line.split()[1:]}
    return set()


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class AdapterHandle(Protocol):
    """What ``ChannelProcess`` needs of a running adapter: an exec'd one is an
    ``asyncio.subprocess.Process``, a forked one a ``ZygoteChild``."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    @property
    def stderr(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class ZygoteChild:
    """An adapter the zygote forked: not our child, so its exit code comes from the zygote."""

    def __init__(self, pid: int, stderr: asyncio.StreamReader) -> None:
        self.pid = pid
        self._stderr = stderr
        self._code: int | None = None
        self._ended = asyncio.Event()

    @property
    def returncode(self) -> int | None:
        return self._code

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        return self._stderr

    def ended(self, code: int) -> None:
        if self._code is None:
            self._code = code
            self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self._code is not None
        return self._code

    def send_signal(self, sig: int) -> None:
        if self._code is None:  # reaped: its pid may be another process's now
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The orchestrator's side of the adapters' zygote (``zygote.py``): started on the first
    adapter, asked to fork each one, and started again if it dies."""

    def __init__(self, log_level: str = "info") -> None:
        self.log_level = log_level
        self.log = get_logger()
        self.pid: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._forked: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ZygoteChild] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def spawn(self, channel: str, fd: int) -> ZygoteChild:
        """Fork an adapter for ``channel`` that speaks on socket ``fd`` (ours stays open)."""
        control = await self._started()
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        forked: asyncio.Future[int] = loop.create_future()
        self._forked[request_id] = forked
        uid = adapter_uid(channel) if os.geteuid() == 0 else None
        request = {"id": request_id, "channel": channel, "uid": uid, "log_level": self.log_level}
        stderr_read, stderr_write = os.pipe()
        try:
            fds = [fd, stderr_write, sys.stdout.fileno()]
            socket.send_fds(control, [json.dumps(request).encode()], fds)
        finally:
            os.close(stderr_write)
        try:
            async with asyncio.timeout(30):
                pid = await forked
        except BaseException:
            os.close(stderr_read)
            raise
        finally:
            self._forked.pop(request_id, None)
        stderr = asyncio.StreamReader(loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stderr), os.fdopen(stderr_read, "rb", 0)
        )
        child = self._children[pid] = ZygoteChild(pid, stderr)
        return child

    async def _started(self) -> socket.socket:
        async with self._lock:
            if self._control is not None and self._process and self._process.returncode is None:
                return self._control
            await self.close()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            spec = process_spec(
                "zygote",
                theirs.fileno(),
                sys.executable,
                _package_root(),
                os.geteuid(),
                os.environ,
                self.log_level,
            )
            argv = (*spec.argv[:2], "clawpen.channels.zygote", spec.argv[3])
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=spec.env,
                    cwd=spec.cwd,
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
            finally:
                theirs.close()
            ours.setblocking(False)
            self._control = ours
            self.pid = self._process.pid
            self._reader = asyncio.create_task(self._read(ours), name="adapter-zygote")
            self.log.info("channel_zygote_started", pid=self.pid)
            return ours

    async def _read(self, control: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while message := await loop.sock_recv(control, 4096):
                answer = json.loads(message)
                if "exited" in answer:
                    child = self._children.pop(int(answer["exited"]), None)
                    if child is not None:
                        child.ended(int(answer["code"]))
                else:
                    forked = self._forked.get(int(answer["id"]))
                    if forked is not None and not forked.done():
                        forked.set_result(int(answer["pid"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.log.error("channel_zygote_failed", error=str(exc))
        finally:
            # gone: its children can no longer be reaped by it (they end with their sockets)
            for child in self._children.values():
                child.ended(-1)
            self._children.clear()
            for forked in self._forked.values():
                if not forked.done():
                    forked.set_exception(AdapterExited("the adapters' zygote exited"))

    async def close(self) -> None:
        """End the zygote (its adapters are ended by their channels, through their sockets)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                if self._process.returncode is None:
                    self._process.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE):
                    await self._process.wait()
            self._process = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


class ChannelProcess:
    """Runs one adapter as a child process for as long as ``run`` runs (the orchestrator
    restarts ``run`` when it raises, and disables the channel on ``ChannelFatal``)."""

    def __init__(
        self,
        name: str,
        settings: BaseModel,
        max_message_length: int,
        log_level: str = "info",
        zygote: Zygote | None = None,
    ) -> None:
        self.name = name
        self.zygote = zygote  # None: exec'd on its own
        self.log_level = log_level
        self.settings = settings
        self.max_message_length = max_message_length
        self.log = get_logger()
        self.pid: int | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sends: dict[int, asyncio.Future[str]] = {}
        self._ids = itertools.count(1)
        self._held: list[wire.Frame] | None = None  # written before the start: sent after it

    async def run(self, accept: Accept) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await self._spawn(theirs.fileno())
        finally:
            theirs.close()
        self.pid = process.pid
        uid = adapter_uid(self.name) if os.geteuid() == 0 else None
        self.log.info("channel_started", channel=self.name, pid=process.pid, uid=uid)
        fatal: str | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=wire.MAX_FRAME)
            self._writer = writer
            self._held = []
            async with asyncio.TaskGroup() as group:
                group.create_task(self._relay_stderr(process))
                started, fatal = await self._start(reader, writer, process.pid, uid)
                if started:
                    fatal = await self._serve(reader, accept, group)
                group.create_task(self._stop(process))
        finally:
            self._writer = None
            self._held = None
            self._fail_sends(f"the {self.name} adapter process ended")
            ours.close()
            if process.returncode is None:
                await self._stop(process)
            self.pid = None
        if fatal is not None:
            raise ChannelFatal(fatal)
        raise AdapterExited(f"the {self.name} adapter exited with code {process.returncode}")

    async def _start(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pid: int,
        uid: int | None,
    ) -> tuple[bool, str | None]:
        """Send the settings (the credential) once the adapter says it is ready and runs as
        its own uid, checked here from /proc, not taken on its word. Returns whether it was
        started, and its fatal error if it sent one instead (a CA bundle it cannot read) or
        kept its privileges; neither: it is stopped and restarted, never having had it."""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                frame = await wire.read_frame(reader)
        except (wire.FrameError, TimeoutError) as exc:
            error = str(exc) or "no ready frame in time"
            self.log.error("channel_protocol_error", channel=self.name, error=error)
            return False, None
        if frame is not None and frame["type"] == "fatal":
            return False, str(frame.get("error", ""))[: wire.MAX_ERROR] or "fatal error"
        if frame is None or frame["type"] != "ready":
            return False, None
        if uid is not None and (found := process_uids(pid)) != {uid}:
            return False, (
                f"the {self.name} adapter did not drop to uid {uid} (it runs as "
                f"{sorted(found)}); its credential was not sent"
            )
        settings = self.settings.model_dump(mode="json")
        writer.write(wire.encode(wire.start_frame(self.name, settings)))
        held, self._held = self._held or [], None
        for waiting in held:
            writer.write(wire.encode(waiting))
        return True, None

    async def _spawn(self, fd: int) -> AdapterHandle:
        if self.zygote is not None:
            return await self.zygote.spawn(self.name, fd)
        spec = process_spec(
            self.name,
            fd,
            sys.executable,
            _package_root(),
            os.geteuid(),
            os.environ,
            self.log_level,
        )
        return await asyncio.create_subprocess_exec(
            *spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            pass_fds=(fd,),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in our terminal is ours to pass on, or not
        )

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
                elif kind == "reach":
                    group.create_task(report_reach(accept, *wire.parse_reach(frame)))
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
        if self._held is not None:  # the adapter has not been started yet
            self._held.append(frame)
        elif self._writer is not None and not self._writer.is_closing():
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

    async def _relay_stderr(self, process: AdapterHandle) -> None:
        """What the adapter prints outside its log (a traceback, an import error) joins ours."""
        assert process.stderr is not None
        async for line in process.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                self.log.warning("channel_stderr", channel=self.name, line=text[:2000])

    async def _stop(self, process: AdapterHandle) -> None:
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
