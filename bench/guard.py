"""``python -m bench.guard --pid-file FILE -- COMMAND...``: run a child orchestrator so that it is
stopped, with exactly one SIGTERM, however the bench ends.

The guard asks the kernel for a SIGTERM when the bench dies (even by SIGKILL). That signal can
come more than once (once per exiting thread of a multi-threaded parent), and so can a
terminal's Ctrl-C; the orchestrator aborts its own clean shutdown on a second signal, leaving
its containers running. So the child runs in a session of its own and only the guard's first
signal is passed on. The child's pid goes to FILE (for RSS readings and py-spy).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1  # prctl(2)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guard")
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the bench died before the request took effect
        return 1
    child = subprocess.Popen(command, start_new_session=True)
    forwarded = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal forwarded
        if not forwarded:
            forwarded = True
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    args.pid_file.write_text(str(child.pid))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
