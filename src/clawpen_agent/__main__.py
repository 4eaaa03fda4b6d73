"""Agent entry point: wait for a task on the socket, run it, send the result, repeat."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from . import claude_engine, forwarder
from .loop import model_caller, run_task
from .protocol import (
    NEXT_TASK_PATH,
    SOCKET_PATH,
    STOPPED_TASKS_PATH,
    TASK_HEADER,
    TOOL_CALLS_HEADER,
    WORKSPACE,
    Task,
    TaskResult,
    format_tool_calls,
    is_task,
    result_path,
)
from .session import Sessions
from .stopping import Stops
from .transport import HTTPError, SocketClient


def log(message: str) -> None:
    print(f"clawpen-agent: {message}", file=sys.stderr, flush=True)


def serve(
    socket_path: str,
    root: str,
    stopped: Callable[[], bool] = lambda: False,
    lanes: int | None = None,
) -> None:
    """Run tasks until ``stopped``: ``lanes`` of them at once (``CLAWPEN_LANES``, the agent's
    max_parallel), each lane a thread asking for its next task on its own connection; the
    orchestrator never hands two lanes the same conversation."""
    count = lanes or _lanes_from_environment()
    engine = os.environ.get("CLAWPEN_ENGINE", "light")
    if engine == "claude-code":  # its CLI reaches the model proxy through loopback
        claude_engine.start_forwarder(socket_path)
    sessions = Sessions(root)
    stops = Stops()
    lane = (socket_path, root, sessions, engine, stops, stopped)
    threads = [threading.Thread(target=run_lane, args=lane, daemon=True) for _ in range(count - 1)]
    # /stop in one chat stops that chat's lane only; a dead orchestrator's tasks, every lane
    threads.append(
        threading.Thread(target=watch_stops, args=(socket_path, stops, stopped), daemon=True)
    )
    for thread in threads:
        thread.start()
    run_lane(*lane)


def _lanes_from_environment() -> int:
    raw = os.environ.get("CLAWPEN_LANES", "1")
    return max(1, min(int(raw), 32)) if raw.isdigit() else 1


def run_lane(
    socket_path: str,
    root: str,
    sessions: Sessions,
    engine: str,
    stops: Stops,
    stopped: Callable[[], bool],
) -> None:
    """One lane: wait for a task on the socket, run it, hand in the result, repeat."""
    tasks = SocketClient(socket_path)  # held open while waiting: no timeout
    model = SocketClient(socket_path, timeout=900)
    # the orchestrator's tools' own connection; a call may wait for a person's approval (a day
    # at most: approvals.timeout), and the orchestrator's task deadline is the backstop
    jobs = SocketClient(socket_path, timeout=86_400 + 60)
    tools_ran: list[tuple[str, float, float]] = []  # since the last model call (tracing)
    trace = ""
    task_id = 0

    def post_model(path: str, payload: dict[str, Any]) -> Any:
        headers = {"traceparent": trace} if trace else {}
        if trace and tools_ran:
            headers[TOOL_CALLS_HEADER] = format_tool_calls(tools_ran)
        answer = model.post_json(path, payload, headers)
        tools_ran.clear()
        return answer

    def tool_ran(name: str, began: float, ended: float) -> None:
        if trace:
            tools_ran.append((name, began, ended))

    def api(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        """A tool's call to the orchestrator, naming the task it is made for."""
        return jobs.request(method, url, body, {TASK_HEADER: str(task_id)})

    call_model = model_caller(post_model)
    delay = 0.05
    ahead: tuple[int, bytes] | None = None  # the next task, handed over with the last result
    while not stopped():
        try:
            status, body = ahead or tasks.request("GET", NEXT_TASK_PATH)
            ahead = None
        except OSError as exc:
            if stopped():
                return
            # The orchestrator is restarting: reconnect with backoff; nothing is lost, the
            # task stays in its store until we come back.
            log(f"socket unavailable ({exc}); retrying in {delay:.2f}s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        delay = 0.05
        if status == 204:
            continue
        if status != 200:
            log(f"unexpected {status} from {NEXT_TASK_PATH}: {body[:200]!r}")
            time.sleep(1)
            continue
        received = time.time()
        task = Task.from_json(body)
        trace, task_id = task.trace, task.id
        tools_ran.clear()
        with stops.working_on(task.id):
            try:
                if engine == "claude-code":
                    result = claude_engine.run_task(task, root, api)
                else:
                    result = run_task(
                        task, call_model, sessions, root, api, log=log, on_tool=tool_ran
                    )
            except HTTPError as exc:
                result = TaskResult(error=f"model call failed: {exc}")
            except Exception as exc:  # a bug here must still answer the task
                result = TaskResult(error=f"agent error: {type(exc).__name__}: {exc}")
        # wall-clock times: the orchestrator shares this clock and reports the overhead around us
        result = replace(result, extra={"received": received, "answered": time.time()})
        ahead = hand_in(tasks, task.id, result)


def watch_stops(socket_path: str, stops: Stops, stopped: Callable[[], bool]) -> None:
    """Hold a request open for the tasks the user stops, and stop each (``stopping.py``);
    when the request breaks, the orchestrator is gone: stop every task (it runs them again)."""
    client = SocketClient(socket_path)
    delay = 0.05
    while not stopped():
        try:
            status, body = client.request("GET", STOPPED_TASKS_PATH)
        except OSError:
            stops.stop_all()
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        delay = 0.05
        if status != 200:
            if status == 503:  # shutting down: it hands its tasks back to the store
                stops.stop_all()
            time.sleep(0.5)
            continue
        try:
            named = json.loads(body).get("tasks", [])
        except (ValueError, AttributeError):
            continue
        for task_id in named:
            if isinstance(task_id, int):
                log(f"task {task_id} stopped by the user")
                stops.stop(task_id)


class Requester(Protocol):
    def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]: ...


def hand_in(
    client: Requester,
    task_id: int,
    result: TaskResult,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, bytes] | None:
    """Send the result, cleaned so that the orchestrator's checks pass, and ask for the next
    task in the same exchange; returns that answer when it carries one. Should the result be
    refused all the same (400), an error result ends the task instead of leaving it to time
    out; when the orchestrator is busy (429, 503) it is asked again shortly."""
    body = result.sanitized().to_json()
    substituted = False
    for attempt in range(4):
        try:
            status, answer = client.request("POST", result_path(task_id, then_next=True), body)
        except OSError as exc:
            log(f"could not hand in task {task_id} ({exc}); the orchestrator will run it again")
            return None
        if status == 200 and is_task(answer):
            return status, answer
        if status == 400 and not substituted:
            log(f"result of task {task_id} refused: {answer[:200]!r}; sending an error instead")
            refused = answer[:500].decode(errors="replace")
            body = TaskResult(error=f"the answer was refused: {refused}").sanitized().to_json()
            substituted = True
            continue
        if status in (429, 503) and attempt < 3:
            sleep(0.5 * 2**attempt)
            continue
        if status >= 400:
            log(f"task {task_id}: result answered {status}: {answer[:200]!r}")
        return None
    return None


def main() -> None:
    socket_path = os.environ.get("CLAWPEN_SOCKET", SOCKET_PATH)
    root = os.environ.get("CLAWPEN_WORKSPACE", WORKSPACE)
    if os.environ.get("CLAWPEN_EGRESS") == "1":  # HTTPS_PROXY names it: start it first
        forwarder.start()
    with contextlib.suppress(KeyboardInterrupt):
        serve(socket_path, root)


if __name__ == "__main__":
    main()
