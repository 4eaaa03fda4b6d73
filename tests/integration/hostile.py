"""A hostile client of the agent's socket, run *inside* an agent container by its shell tool.

Standard library only (it runs on the image's python3). It tries, in turn, what a prompt-injected
agent could: malformed results, oversized and endless bodies, giant JSON, garbage, slow heads
and bodies, more bodies in flight than allowed, and thousands of connections. It records how the
orchestrator answered each and prints one line, ``HOSTILE{json}``, for the test to read.
Every loop is bounded in count and time; the whole run takes about 40 seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SOCKET = os.environ.get("HOSTILE_SOCKET", "/run/clawpen/agent.sock")
MiB = 1024 * 1024
FLOOD_MAX = 3000


def connect(timeout: float = 15) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(SOCKET)
    return sock


def read_answer(sock: socket.socket) -> tuple[int | None, str]:
    """The status of the answer, and how the connection ended (``ok``, ``closed``, ...)."""
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return status_of(data), "closed"
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                return status_of(data), "ok"
    except TimeoutError:
        return status_of(data), "timeout"
    except OSError as exc:
        return status_of(data), type(exc).__name__


def status_of(data: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else None


def exchange(raw: bytes, timeout: float = 15) -> int | None:
    sock = connect(timeout)
    try:
        with contextlib.suppress(OSError):  # refused before we finished: the answer says why
            sock.sendall(raw)
        return read_answer(sock)[0]
    finally:
        sock.close()


def post(path: str, body: bytes, length: int | None = None, extra: str = "") -> bytes:
    size = len(body) if length is None else length
    head = f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n{extra}\r\n"
    return head.encode() + body


def timed(fn: Callable[[], Any]) -> list[Any]:
    started = time.monotonic()
    value = fn()
    return [value, round(time.monotonic() - started, 2)]


def malformed_results() -> dict[str, Any]:
    bodies = {
        "text_a_number": b'{"text": 123}',
        "text_a_list": b'{"text": ["a"]}',
        "raw_lone_surrogate": b'{"text": "\xed\xa0\x80"}',
        "escaped_lone_surrogate": b'{"text": "\\ud800"}',
        "nul": b'{"text": "a\\u0000b"}',
        "tool_calls_negative": b'{"text": "x", "tool_calls": -1}',
        "extra_nested": b'{"text": "x", "extra": {"a": {"b": 1}}}',
        "not_json": b"not json",
        "nan": b'{"text": "x", "extra": {"a": NaN}}',
    }
    found = {name: exchange(post("/v1/tasks/999999/result", body)) for name, body in bodies.items()}
    found["task_id_not_a_number"] = exchange(post("/v1/tasks/abc/result", b'{"text": "x"}'))
    return found


def oversized_and_endless() -> dict[str, Any]:
    def announced(path: str, size: int) -> int | None:
        return exchange(post(path, b"{", length=size))  # the body never follows

    return {
        "result_50MiB": timed(lambda: announced("/v1/tasks/1/result", 50 * MiB)),
        "messages_1GiB": timed(lambda: announced("/v1/messages", 1024 * MiB)),
        "chunked_endless": exchange(
            b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"10000\r\n"
            + b"x" * 65536
        ),
    }


def garbage_and_heads() -> dict[str, Any]:
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(200))
    return {
        "garbage": exchange(bytes(range(256)) * 8 + b"\r\n\r\n"),
        "tls_hello": exchange(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500),
        "nul_bytes": exchange(b"\x00" * 4096 + b"\r\n\r\n"),
        "too_many_headers": exchange(f"GET /v1/tasks/next HTTP/1.1\r\n{many}\r\n".encode()),
        "long_header": exchange(
            b"GET /v1/tasks/next HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n"
        ),
        "long_request_line": exchange(b"GET /" + b"p" * 20000 + b" HTTP/1.1\r\n\r\n"),
    }


def giant_json(seconds: float = 8.0) -> dict[str, Any]:
    """~19 MiB bodies, one after another: each is parsed (off the orchestrator's loop)."""
    text = b"x" * (19 * MiB)
    pricier = (
        b'{"model": "claude-opus", "messages": [{"role": "user", "content": "' + text + b'"}]}'
    )
    statuses: list[int | None] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until and len(statuses) < 200:
        statuses.append(exchange(post("/v1/messages", pricier), timeout=30))
    values = b"[" + b"{}," * (6 * MiB) + b"{}]"
    return {"giant_bodies": statuses, "too_many_values": exchange(post("/v1/messages", values))}


def slow_ones() -> dict[str, Any]:
    """A slow body, a slow head, a silent connection and a budget hog, at the same time."""
    found: dict[str, Any] = {}

    def slow_body() -> None:
        sock = connect(30)
        sock.sendall(post("/v1/tasks/1/result", b'{"te', length=1000))
        found["slow_body"] = timed(lambda: read_answer(sock)[0])
        sock.close()

    def slowloris() -> None:
        sock = connect(30)
        started = time.monotonic()
        try:
            sock.sendall(b"GET /v1/tasks/next HTTP/1.1\r\nHost: a\r\n")
            for _ in range(60):  # one header byte every half second: 30 s if never cut
                sock.sendall(b"X")
                time.sleep(0.5)
            found["slowloris_cut_after"] = None
        except OSError:
            found["slowloris_cut_after"] = round(time.monotonic() - started, 2)
        sock.close()

    def silent() -> None:
        sock = connect(30)
        found["silent_closed"] = timed(lambda: read_answer(sock)[1])
        sock.close()

    def budget() -> None:
        hogs = []
        for _ in range(2):  # 2 x 15 MiB announced, 1 MiB sent, then nothing
            sock = connect(30)
            sock.sendall(post("/v1/messages", b"{" * MiB, length=15 * MiB))
            hogs.append(sock)
        time.sleep(0.5)
        found["over_budget"] = exchange(post("/v1/messages", b"{", length=15 * MiB))
        found["hogs"] = [read_answer(sock)[0] for sock in hogs]
        for sock in hogs:
            sock.close()

    threads = [threading.Thread(target=t) for t in (slow_body, slowloris, silent, budget)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(45)
    return found


def flood() -> dict[str, Any]:
    """As many connections as this process may open (up to FLOOD_MAX), all held open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(FLOOD_MAX, soft - 100)
    socks: list[socket.socket] = []
    failed = 0
    until = time.monotonic() + 15
    while len(socks) < wanted and time.monotonic() < until:
        try:
            socks.append(connect(2))
        except BlockingIOError:  # the listen backlog is full for a moment: wait for the accepts
            time.sleep(0.002)
        except OSError:
            failed += 1
    time.sleep(1.5)
    turned_away = held = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            held += 1
            continue
        except OSError:
            data = b""
        turned_away += 1 if data.startswith(b"HTTP/1.1 503") else 0
    time.sleep(6)  # past the head deadline: the held ones, silent, are closed by now
    still_open = 0
    for sock in socks:
        try:
            sock.recv(4096)  # b"" or the 503: closed by the orchestrator
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    return {
        "nofile": soft,
        "opened": len(socks),
        "connect_failed": failed,
        "turned_away_503": turned_away,
        "held": held,
        "still_open_after_deadline": still_open,
    }


def main() -> None:
    """Every step in turn, or only the steps named as arguments (``hostile.py slow_ones``)."""
    summary: dict[str, Any] = {}
    steps = (malformed_results, oversized_and_endless, garbage_and_heads, giant_json, slow_ones)
    chosen = sys.argv[1:] or [step.__name__ for step in steps] + ["flood"]
    for step in steps:
        if step.__name__ in chosen:
            summary.update(step())
    if "flood" in chosen:
        summary["flood"] = flood()
    print("HOSTILE" + json.dumps(summary, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
