"""One structlog chain: JSON objects on stdout, one per line.

Events are snake_case (``message_routed``); context keys follow the seed's log schema
(``agentId``, ``taskId``, ``channel``, ``chat``, ``duration``, ``success``).

Every event, at any level, first goes to the in-process subscribers (``subscribe``: the
benchmark, a dashboard later), so they listen to what the log says instead of patching methods.
Then repeated warnings and errors are rate-limited, the level is applied, the line is rendered,
every known secret value is taken out of it (``redact.py``), and it is written.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TextIO, cast

import structlog
from structlog.exceptions import DropEvent
from structlog.typing import EventDict, WrappedLogger

from ..ratelimit import KeyedBuckets
from .redact import SECRETS

if TYPE_CHECKING:
    from .logfile import RotatingFile

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "exception": logging.ERROR,
}
Subscriber = Callable[[EventDict], None]
REPEAT_KEYS = ("agentId", "channel", "chat", "reason")  # what makes two warnings "the same"


class Fanout:
    """Hands every event dict to each subscriber (which must not change it, nor block)."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for subscriber in self.subscribers:
            subscriber(event)
        return event


class LevelFilter:
    def __init__(self, level: int) -> None:
        self.level = level

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if LEVELS.get(method, logging.INFO) < self.level:
            raise DropEvent
        return event


class RepeatLimiter:
    """At most ``burst`` lines at once, then ``rate`` a second, of the same warning or error
    (same event and the same agent, channel, chat and reason); the next line that passes says
    how many were held back (``suppressed``). A flood from one hostile agent or platform must
    not bury everything else or fill the disk."""

    def __init__(
        self,
        rate: float = 1.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buckets: KeyedBuckets[tuple[Any, ...]] = KeyedBuckets(rate, burst, max_keys=4096)
        self.suppressed: dict[tuple[Any, ...], int] = {}
        self.clock = clock

    def __call__(
        self, logger: WrappedLogger, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if LEVELS.get(method, logging.INFO) < logging.WARNING:
            return event
        key = (event.get("event"), *(str(event.get(k, "")) for k in REPEAT_KEYS))
        if not self.buckets.allow(key, self.clock()):
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            if len(self.suppressed) > 4096:
                self.suppressed.clear()
            raise DropEvent
        held = self.suppressed.pop(key, 0)
        if held:
            event["suppressed"] = held
        return event


class LineWriter:
    """A file for the log that never blocks the caller: lines go to a queue, and a thread of
    its own writes them out. A stdout that stalls (a full pipe, a paused terminal, a disk that
    throttles writes) then costs log lines, counted and reported, never the event loop."""

    def __init__(self, target: TextIO, max_pending: int = 100_000) -> None:
        self.target = target
        self.max_pending = max_pending
        self.dropped = 0
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()  # keeps "queue empty" and "idle" in step
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._write_out, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.drain)

    def write(self, text: str) -> int:
        if self._lines.qsize() >= self.max_pending:
            self.dropped += 1
            return len(text)
        with self._lock:
            self._idle.clear()
            self._lines.put(text)
        return len(text)

    def flush(self) -> None:
        """Lines are written as soon as the writer gets to them; nothing to wait for here."""

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every line so far is written (at exit, and in tests)."""
        self._idle.wait(timeout)

    def _write_out(self) -> None:
        while True:
            lines = [self._lines.get()]
            while not self._lines.empty():
                lines.append(self._lines.get_nowait())
            if self.dropped:
                lines.append(_dropped_line(self.dropped))
                self.dropped = 0
            with contextlib.suppress(OSError, ValueError):  # stdout closed: nowhere to write
                self.target.write("".join(lines))
                self.target.flush()
            with self._lock:
                if self._lines.empty():
                    self._idle.set()


def redact_line(logger: WrappedLogger, method: str, line: Any) -> Any:
    """The last step, after rendering (so ``line`` is the rendered text): no known secret value
    leaves in a log line, wherever it hides (a field, an exception's message, a traceback, a
    library's own log)."""
    return SECRETS(line) if isinstance(line, str) else line


def _dropped_line(count: int) -> str:
    event = {"event": "log_lines_dropped", "count": count, "level": "error"}
    return json.dumps(event) + "\n"


FANOUT = Fanout()


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Receive every event from now on; returns the function that stops it."""
    FANOUT.subscribers.append(subscriber)
    return lambda: FANOUT.subscribers.remove(subscriber)


def configure(
    level: str = "info", stream: TextIO | None = None, file: RotatingFile | None = None
) -> None:
    """JSON lines on ``stream``, or on stdout through a ``LineWriter`` (and to ``file`` too,
    the orchestrator's own log that ``clawpen logs`` reads)."""
    from .logfile import Tee

    target = cast(TextIO, Tee(sys.stdout, file)) if file is not None else sys.stdout
    out: TextIO | LineWriter = stream or LineWriter(target)
    # Libraries that log through the standard library (PTB, httpx, aiohttp) end up as the same
    # JSON lines, so that stdout stays one object per line.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
                redact_line,
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            FANOUT,
            LevelFilter(LEVELS[level]),
            RepeatLimiter(),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
            redact_line,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("clawpen")
    return logger
