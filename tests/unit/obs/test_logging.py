"""The log pipeline: every event reaches subscribers whatever its level, and a warning
repeated in a flood is held back and counted."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import pytest
from structlog.exceptions import DropEvent

from clawpen.obs import logging as clawpen_logging
from clawpen.obs.logging import LineWriter, RepeatLimiter


def test_subscribers_get_debug_events_the_log_leaves_out() -> None:
    out = io.StringIO()
    clawpen_logging.configure("info", out)
    seen: list[dict[str, Any]] = []
    stop = clawpen_logging.subscribe(seen.append)
    try:
        log = clawpen_logging.get_logger()
        log.debug("message_arrived", platformId="7")
        log.info("message_received", messageId=1)
    finally:
        stop()
        clawpen_logging.configure("info")
    assert [e["event"] for e in seen] == ["message_arrived", "message_received"]
    written = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert written == ["message_received"]


def test_a_flood_of_the_same_warning_is_held_back_and_then_counted() -> None:
    now = [0.0]
    limiter = RepeatLimiter(rate=1.0, burst=3, clock=lambda: now[0])
    passed = 0
    for _ in range(100):
        try:
            limiter(None, "warning", {"event": "agent_request_refused", "agentId": "evil"})
            passed += 1
        except DropEvent:
            pass
    assert passed == 3
    other = limiter(None, "warning", {"event": "agent_request_refused", "agentId": "good"})
    assert "suppressed" not in other  # another agent's warnings are not held back
    now[0] = 1.0
    after = limiter(None, "warning", {"event": "agent_request_refused", "agentId": "evil"})
    assert after["suppressed"] == 97


def test_info_events_are_never_held_back() -> None:
    limiter = RepeatLimiter(rate=1.0, burst=1, clock=lambda: 0.0)
    passed = [limiter(None, "info", {"event": "message_received"}) for _ in range(10)]
    assert passed == [{"event": "message_received"}] * 10  # all ten, none marked suppressed


@pytest.mark.parametrize("level", ["warning", "error"])
def test_warnings_and_errors_are_limited(level: str) -> None:
    limiter = RepeatLimiter(rate=1.0, burst=1, clock=lambda: 0.0)
    limiter(None, level, {"event": "x"})
    with pytest.raises(DropEvent):
        limiter(None, level, {"event": "x"})


class StuckStream(io.StringIO):
    """A stdout whose reader stopped reading: a write blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait()
        return super().write(text)


def test_a_stalled_stdout_costs_log_lines_not_the_caller() -> None:
    stuck = StuckStream()
    writer = LineWriter(stuck, max_pending=100)
    began = time.monotonic()
    for i in range(1000):
        writer.write(f'{{"event": "line", "n": {i}}}\n')
    assert time.monotonic() - began < 0.5  # nothing waited for the stuck stream
    stuck.release.set()
    writer.drain()
    lines = [json.loads(line) for line in stuck.getvalue().splitlines()]
    kept = [line["n"] for line in lines if line["event"] == "line"]
    assert kept == sorted(kept) and 100 <= len(kept) <= 102  # in order; the rest dropped
    [dropped] = [line for line in lines if line["event"] == "log_lines_dropped"]
    assert dropped["count"] == 1000 - len(kept)
