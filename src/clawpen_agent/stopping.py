"""Which of the agent's tasks the user stopped, and the process groups each task's tools run.

An agent works on several conversations at once, one lane (thread) each. ``/stop`` in one chat
must end that chat's task and no other: the orchestrator names the task (``__main__.watch_stops``
holds a request open for it), its tools' process groups are killed, and its lane gives up at its
next step. When that request breaks, the orchestrator is gone (it crashed or stopped): every
task at work is given up alike, since the next orchestrator runs them again from its store, and
lanes held by a dead orchestrator's tasks would keep the re-runs waiting.

A lane says which task it runs (``Stops.working_on``); the shell tool registers each process
group it starts (``running``) and the loop asks whether to go on (``stopped``), both for the
task of the thread they run on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

_lane = threading.local()  # .stops, .task: what the current thread works on, if a lane


class Stops:
    """One agent's tasks at work (``serve`` has one; in-process agents one each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, set[int]] = {}  # task id -> its tools' running process groups
        self._stopped: set[int] = set()  # stopped, whether or not it had started here yet

    @contextlib.contextmanager
    def working_on(self, task_id: int) -> Iterator[None]:
        """This thread runs ``task_id`` until the block ends."""
        _lane.stops, _lane.task = self, task_id
        with self._lock:
            self._groups[task_id] = set()
        try:
            yield
        finally:
            _lane.stops = _lane.task = None
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

    def stop_all(self) -> None:
        """Stop every task at work here (the orchestrator that handed them out is gone)."""
        with self._lock:
            running = list(self._groups)
        for task_id in running:
            self.stop(task_id)

    def _is_stopped(self, task_id: int) -> bool:
        with self._lock:
            return task_id in self._stopped

    def _add(self, task_id: int, group: int) -> bool:
        with self._lock:
            if task_id in self._groups:
                self._groups[task_id].add(group)
            return task_id in self._stopped

    def _remove(self, task_id: int, group: int) -> None:
        with self._lock:
            self._groups.get(task_id, set()).discard(group)


def stopped() -> bool:
    """True when the task this thread runs was stopped."""
    stops, task = getattr(_lane, "stops", None), getattr(_lane, "task", None)
    return stops is not None and task is not None and stops._is_stopped(task)


@contextlib.contextmanager
def running(group: int) -> Iterator[None]:
    """The process group ``group`` runs for this thread's task until the block ends (killed
    at once if the task was stopped already)."""
    stops, task = getattr(_lane, "stops", None), getattr(_lane, "task", None)
    if stops is None or task is None:
        yield
        return
    if stops._add(task, group):
        _kill(group)
    try:
        yield
    finally:
        stops._remove(task, group)


def _kill(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
