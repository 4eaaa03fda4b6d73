"""Which of the agent's tasks the user stopped, and the process groups each task's tools run.

An agent works on several conversations at once, one lane (thread) each. ``/stop`` in one chat
must end that chat's task and no other: the orchestrator names the task (``watch`` holds a
request open for it), its tools' process groups are killed, and its lane gives up at its next
step. A task's lane says which task it runs (``working_on``); the shell registers each process
group it starts (``process``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


class Stops:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, set[int]] = {}  # task id -> its tools' running process groups
        self._stopped: set[int] = set()  # stopped, whether or not it had started here yet
        self._local = threading.local()

    @contextlib.contextmanager
    def working_on(self, task_id: int) -> Iterator[None]:
        """This thread runs ``task_id`` until the block ends."""
        self._local.task = task_id
        with self._lock:
            self._groups[task_id] = set()
        try:
            yield
        finally:
            self._local.task = None
            with self._lock:
                self._groups.pop(task_id, None)
                self._stopped.discard(task_id)

    def stop(self, task_id: int) -> None:
        """Stop ``task_id``: its running tools are killed, and it takes no further step."""
        with self._lock:
            self._stopped.add(task_id)
            groups = list(self._groups.get(task_id, ()))
        for group in groups:
            _kill(group)

    def stopped(self) -> bool:
        """True when the task this thread runs was stopped."""
        task = getattr(self._local, "task", None)
        with self._lock:
            return task is not None and task in self._stopped

    @contextlib.contextmanager
    def process(self, group: int) -> Iterator[None]:
        """The process group ``group`` runs for this thread's task until the block ends."""
        task = getattr(self._local, "task", None)
        with self._lock:
            if task is not None and task in self._groups:
                self._groups[task].add(group)
            stopped = task is not None and task in self._stopped
        if stopped:
            _kill(group)
        try:
            yield
        finally:
            with self._lock:
                if task is not None:
                    self._groups.get(task, set()).discard(group)


def _kill(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


STOPS = Stops()  # the agent's one registry: its lanes, its shell tool and its watcher share it
