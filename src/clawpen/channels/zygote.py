"""The adapters' zygote: ``python -m clawpen.channels.zygote FD``, started by ``process.py``.

Every adapter process imports the same libraries (the event loop, aiohttp, pydantic, structlog,
our wire code): tens of megabytes of Python objects each, when each is a fresh interpreter.
The zygote is one such fresh process, started like an adapter (exec, never a fork of the
orchestrator; none of our environment; no credential, ever), that imports them once, freezes
them out of the garbage collector's reach and then forks each adapter on request: the
adapters share those pages (copy-on-write) instead of holding a copy each.

A forked adapter is then what an exec'd one is (``runner.run``): a session of its own,
its stderr our pipe, its platform's own modules imported, its own uid dropped to, its
credential read from its own socket. The zygote reaps them and reports their exit codes.

The control socket (SOCK_SEQPACKET: one message per request) carries JSON: in,
``{"id": N, "channel": NAME, "uid": UID|null, "log_level": LEVEL}`` with three descriptors
(the adapter's socket, the write end of its stderr pipe, the orchestrator's stdout, where an
exec'd adapter's log lines go too); out, ``{"id": N, "pid": PID}`` once
it is forked and ``{"exited": PID, "code": CODE}`` once it is reaped. When the orchestrator
closes its end, the zygote exits (its adapters end when their own sockets close).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # as in runner.py

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import traceback

# What every adapter imports anyway; a platform's own library (python-telegram-bot, slack_sdk,
# discord.py, ...) is imported by its adapter alone, after the fork.
SHARED = (
    "asyncio",
    "uvloop",
    "aiohttp",
    "aiohttp.web",
    "pydantic",
    "structlog",
    "clawpen.channels.runner",
    "clawpen.channels.registry",
    "clawpen.channels.base",
    "clawpen.channels.webhook",
)
MAX_REQUEST = 4096


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    for module in SHARED:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()  # what was imported lives for ever: no collection writes into its pages
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                try:
                    message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 3)
                except InterruptedError:
                    continue
                if not message:
                    return  # the orchestrator is gone
                _fork(control, json.loads(message), fds, (wake_read, wake_write))
            else:
                os.read(wake_read, 512)
                _reap(control)


def _fork(
    control: socket.socket, request: dict[str, object], fds: list[int], wake: tuple[int, int]
) -> None:
    adapter_fd, stderr_fd, stdout_fd = fds
    pid = os.fork()
    if pid == 0:  # the adapter
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            control.close()
            for fd in wake:
                os.close(fd)
            os.setsid()
            os.dup2(stderr_fd, 2)
            os.dup2(stdout_fd, 1)  # the orchestrator's: the adapter's log lines join its own
            os.close(stderr_fd)
            os.close(stdout_fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            from . import runner

            uid = request.get("uid")
            code = runner.run(
                adapter_fd,
                str(request["channel"]),
                uid if isinstance(uid, int) else None,
                str(request.get("log_level", "info")),
            )
        except BaseException:
            traceback.print_exc()  # to its stderr: the orchestrator logs it
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    _tell(control, {"id": request.get("id"), "pid": pid})


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _tell(control, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _tell(control: socket.socket, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):  # the orchestrator is gone: the next read says so
        control.send(json.dumps(message).encode())


if __name__ == "__main__":
    main()
