"""What the intake and the workers share, per agent: built first, so both point at it.

The intake (``intake.py``) commits messages and tells the agent's worker there is work
(``wake``), that a burst is on its way in (``arriving``) or that the user said ``/stop``
(``stop``). The worker (``worker.py``) records the tasks it is at (``running``: an agent works
on several conversations at once, one task each), which the intake's ``/stop`` and the agent's
tools read. Neither holds the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from ..models import ClaimedTask
from ..store import Lease


class Leases:
    """This orchestrator's name on the work it claims, and how long a claim lasts unrenewed."""

    def __init__(self, owner: str, seconds: float = 60.0, clock: Callable[[], float] = time.time):
        self.owner = owner
        self.seconds = seconds
        self.clock = clock

    def lease(self, now: float | None = None) -> Lease:
        return Lease(self.owner, (self.clock() if now is None else now) + self.seconds)


class Arrivals:
    """Counts messages on their way into the store for one agent (``with arrivals:``), and
    tells when none is (``landed``). A lone message is committed before its worker wakes, so
    this costs it nothing; in a burst, the worker's next turn takes the whole burst."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    def __enter__(self) -> None:
        self.count += 1
        self._none.clear()

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if not self.count:
            self._none.set()

    async def landed(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._none.wait()


class Board:
    def __init__(self, agent_ids: Iterable[str]) -> None:
        self.agent_ids = frozenset(agent_ids)
        self.wakeups = {a: asyncio.Event() for a in self.agent_ids}
        # messages routed to an agent and being committed right now: its worker lets them land
        # before it claims, so that a burst rides on one turn instead of one turn each
        self.arriving = {a: Arrivals() for a in self.agent_ids}
        # agent id -> the tasks it works on now, by id (an agent without one is not listed)
        self.running: dict[str, dict[int, ClaimedTask]] = {}
        self._stops: dict[int, asyncio.Event] = {}  # task id -> set by /stop
        # task id -> its tool calls waiting for a person's decision: the chat shows the card,
        # not "typing..."
        self.awaiting: dict[int, int] = {}
        self.deadlines: dict[int, asyncio.Timeout] = {}  # task id -> its deadline
        self._notices: dict[str, list[str]] = {}  # agent -> said with its task's reply

    def wake(self, agent_id: str) -> None:
        """The agent has new work in the store (a message, or a job's run queued for it)."""
        if agent_id in self.wakeups:
            self.wakeups[agent_id].set()

    def started(self, task: ClaimedTask) -> asyncio.Event:
        """The worker is at ``task``; returns the event ``/stop`` sets for it."""
        self.running.setdefault(task.agent_id, {})[task.id] = task
        return self._stops.setdefault(task.id, asyncio.Event())

    def ended(self, task: ClaimedTask) -> None:
        tasks = self.running.get(task.agent_id, {})
        tasks.pop(task.id, None)
        if not tasks:
            self.running.pop(task.agent_id, None)
        self._stops.pop(task.id, None)

    def at_work(self, agent_id: str) -> list[ClaimedTask]:
        """The agent's tasks at work, oldest first."""
        return sorted(self.running.get(agent_id, {}).values(), key=lambda t: t.id)

    def working_on(self, agent_id: str, address: object) -> ClaimedTask | None:
        """The agent's task at work for this conversation, if any (there is at most one)."""
        for task in self.at_work(agent_id):
            if str(task.address) == str(address):
                return task
        return None

    def stop(self, task_id: int) -> None:
        """The user said /stop to this task (and to no other of its agent's)."""
        if task_id in self._stops:
            self._stops[task_id].set()

    def notice(self, agent_id: str, text: str) -> None:
        """Something the user must hear about the agent (its budget nearly spent): added to
        the reply of the task it is working on, or of its next one."""
        self._notices.setdefault(agent_id, []).append(text)

    def extend(self, task_id: int, seconds: float) -> None:
        """Move the deadline of a running task by ``seconds`` (negative: back): while one of
        its tool calls waits for a person's decision, that time is not its."""
        deadline = self.deadlines.get(task_id)
        when = None if deadline is None else deadline.when()
        if deadline is not None and when is not None:
            deadline.reschedule(when + seconds)

    def take_notices(self, agent_id: str) -> list[str]:
        return self._notices.pop(agent_id, [])
