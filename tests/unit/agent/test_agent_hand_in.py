"""The agent never trips the orchestrator's checks, and a refused answer still ends the task."""

from __future__ import annotations

import json
from typing import Any

from clawpen_agent.__main__ import hand_in
from clawpen_agent.protocol import TaskResult, check_result, parse_json


class Orchestrator:
    """Stands in for the socket: answers each POST with the next status, records the bodies."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[bytes] = []

    def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        assert method == "POST" and url == "/v1/tasks/7/result?next=1" and body is not None
        self.bodies.append(body)
        status = self.statuses.pop(0)
        return status, json.dumps({"accepted": status == 200, "error": "nope"}).encode()


def sent(orchestrator: Orchestrator) -> list[dict[str, Any]]:
    return [json.loads(body) for body in orchestrator.bodies]


def test_result_is_cleaned_before_it_is_sent() -> None:
    orchestrator = Orchestrator(200)
    hand_in(orchestrator, 7, TaskResult(text="bad \ud800 and \x00 nul"))
    [body] = orchestrator.bodies
    assert check_result(parse_json(body)).text == "bad \ufffd and  nul"


def test_a_refused_result_is_replaced_by_an_error_so_the_task_ends() -> None:
    orchestrator = Orchestrator(400, 200)
    hand_in(orchestrator, 7, TaskResult(text="fine"))
    first, second = sent(orchestrator)
    assert first["text"] == "fine"
    assert second["error"].startswith("the answer was refused:")


def test_a_busy_orchestrator_is_asked_again() -> None:
    orchestrator = Orchestrator(429, 503, 200)
    slept: list[float] = []
    hand_in(orchestrator, 7, TaskResult(text="x"), sleep=slept.append)
    assert len(orchestrator.bodies) == 3 and slept == [0.5, 1.0]


def test_the_next_task_comes_back_with_the_result() -> None:
    class Handing(Orchestrator):
        def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
            super().request(method, url, body)
            return 200, b'{"id": 8, "conversation": "c", "lines": [], "model": "m"}'

    ahead = hand_in(Handing(200), 7, TaskResult(text="x"))
    assert ahead is not None and b'"id": 8' in ahead[1]
    assert hand_in(Orchestrator(200), 7, TaskResult(text="x")) is None  # an older orchestrator
