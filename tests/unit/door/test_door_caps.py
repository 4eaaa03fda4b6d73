"""The door holds against a hostile agent: every cap is per agent, every refusal is an answer
(or a closed connection) and a log line, never a traceback, and the agent's own held-open
request for work still waits as long as it needs.

Each test speaks raw HTTP/1.1 to a real ``AgentSession`` on a Unix socket, with small limits.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from clawpen.door import caps as door
from clawpen.door.caps import DoorLimits
from clawpen.door.proxy import ModelProxy
from clawpen.door.server import AgentGone, AgentSession
from clawpen.obs import logging as clawpen_logging
from clawpen_agent.protocol import ChatLine, Task, TaskResult
from tests.fakes.parse_probe import ParseProbe
from tests.waiting import until

SLOW_SENDER_PACE = 0.05  # seconds between the bytes of a head sent byte by byte
TICK = 0.01  # seconds: how often the lag probe looks at the loop

SMALL = DoorLimits(
    max_connections=4,
    max_headers=8,
    max_field_size=1024,
    max_line_size=1024,
    head_timeout=0.5,
    body_timeout=0.5,
    body_budget=1000,
    result_body_max=800,
    messages_body_max=900,
    inline_parse_max=64,
)


async def no_usage(agent: str, model: str, input_tokens: int, output_tokens: int) -> None:
    pass


Logs = list[MutableMapping[str, Any]]


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def refusals(logs: Logs, reason: str) -> Logs:
    return [e for e in logs if e["event"] == "agent_request_refused" and e["reason"] == reason]


@pytest.fixture
async def make_session(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    upstream = aiohttp.ClientSession()
    proxy = ModelProxy(upstream, "http://127.0.0.1:9", "key", no_usage)
    started: list[AgentSession] = []

    async def make(name: str = "alice", limits: DoorLimits = SMALL) -> AgentSession:
        session = AgentSession(name, tmp_path / name, proxy, limits)
        await session.start()
        started.append(session)
        return session

    yield make
    for session in started:
        await session.close()
    await upstream.close()


@pytest.fixture
async def alice(make_session: Callable[..., Any]) -> AgentSession:
    session: AgentSession = await make_session()
    return session


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """One connection to the socket, written byte by byte as a hostile client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, session: AgentSession) -> Raw:
        return cls(*await asyncio.open_unix_connection(str(session.socket_path)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 5) -> Answer:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(lines[0].split()[1]), headers, body)

    async def closed_within(self, timeout: float) -> bool:
        """True when the server closes the connection within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def exchange(session: AgentSession, data: bytes) -> Answer:
    raw = await Raw.open(session)
    try:
        await raw.send(data)
        return await raw.answer()
    finally:
        raw.close()


def task(task_id: int) -> Task:
    return Task(id=task_id, conversation="telegram:1", lines=[ChatLine("1", "hi")], model="m")


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"text": 123}', b'{"text": ["a"]}', b'{"text": "\xed\xa0\x80"}', b'{"text": "\\ud800"}'],
    ids=["text_a_number", "text_a_list", "raw_lone_surrogate", "escaped_lone_surrogate"],
)
async def test_malformed_result_is_a_400_and_the_honest_one_still_lands(
    alice: AgentSession, body: bytes, logs: Logs
) -> None:
    running = asyncio.create_task(alice.run(task(5), timeout=5))
    await asyncio.sleep(0)
    refused = await exchange(alice, post("/v1/tasks/5/result", body))
    assert refused.status == 400
    assert refused.body.count(b"\n") == 0 and refused.json()["accepted"] is False
    assert refusals(logs, "invalid_result") or refusals(logs, "invalid_body")
    honest = await exchange(alice, post("/v1/tasks/5/result", TaskResult(text="ok").to_json()))
    assert honest.status == 200
    assert (await running).text == "ok"


async def test_body_without_content_length_is_refused(alice: AgentSession, logs: Logs) -> None:
    chunked = (
        b"POST /v1/tasks/1/result HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"
    )
    assert (await exchange(alice, chunked)).status == 411
    assert refusals(logs, "length_required")


@pytest.mark.parametrize(
    ("path", "status_kind"),
    [("/v1/tasks/1/result", None), ("/v1/messages", "request_too_large")],
)
async def test_body_over_the_route_cap_is_refused_before_it_is_read(
    alice: AgentSession, path: str, status_kind: str | None, logs: Logs
) -> None:
    raw = await Raw.open(alice)
    # 1 GiB announced, not a byte of it sent: the answer comes at once, and the connection closes
    await raw.send(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {2**30}\r\n\r\n".encode())
    answer = await raw.answer(timeout=2)
    assert answer.status == 413
    if status_kind:
        assert answer.json()["error"]["type"] == status_kind  # the SDK's own error type
    assert await raw.closed_within(2)
    assert refusals(logs, "body_too_large")[0]["status"] == 413


async def test_body_sent_too_slowly_times_out(alice: AgentSession, logs: Logs) -> None:
    raw = await Raw.open(alice)
    await raw.send(b"POST /v1/tasks/1/result HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
    started = time.monotonic()
    answer = await raw.answer(timeout=3)
    assert answer.status == 408
    assert 0.4 < time.monotonic() - started < 2
    assert await raw.closed_within(2)
    assert refusals(logs, "body_timeout")


async def test_bodies_in_flight_past_the_budget_get_a_429_with_retry_after(
    alice: AgentSession, logs: Logs
) -> None:
    slow = await Raw.open(alice)
    await slow.send(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 800\r\n\r\n{")
    await until(lambda: alice.door.body_bytes >= 800, what="its 800 bytes reserved, not yet sent")
    over = await exchange(alice, post("/v1/tasks/1/result", b"x" * 300))
    assert over.status == 429
    assert over.headers["retry-after"] == "1"
    assert refusals(logs, "body_budget_exhausted")
    assert (await slow.answer()).status == 408  # the slow one times out, freeing its bytes
    slow.close()
    within = await exchange(alice, post("/v1/tasks/1/result", b'{"text": "' + b"x" * 280 + b'"}'))
    assert within.status == 410  # accepted by the door; there is just no such task


async def test_each_agent_has_its_own_body_budget(make_session: Callable[..., Any]) -> None:
    alice, bob = await make_session("alice"), await make_session("bob")
    hog = await Raw.open(alice)
    await hog.send(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\n\r\n{")
    await until(lambda: alice.door.body_bytes >= 900, what="alice's budget spent")
    assert (await exchange(bob, post("/v1/tasks/1/result", b"{}"))).status == 410
    hog.close()


async def test_large_bodies_are_parsed_off_the_loop_one_at_a_time_per_agent(
    make_session: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = ParseProbe(0.3)
    monkeypatch.setattr(door, "parse_json", probe)
    alice, bob = await make_session("alice"), await make_session("bob")
    big = b'{"text": "' + b"x" * 100 + b'"}'  # over inline_parse_max
    started = time.monotonic()
    lags: list[float] = []

    async def tick() -> None:
        while time.monotonic() - started < 0.8:
            before = time.monotonic()
            await asyncio.sleep(TICK)  # a probe of the loop's lag, not a wait for a result
            lags.append(time.monotonic() - before - TICK)

    ticker = asyncio.create_task(tick())
    answers = await asyncio.gather(
        *(exchange(alice, post("/v1/tasks/1/result", big)) for _ in range(2)),
        exchange(bob, post("/v1/tasks/1/result", big)),
    )
    await ticker
    assert [a.status for a in answers] == [410, 410, 410]
    assert threading.get_ident() not in probe.threads  # never on the event loop's thread
    assert probe.most == 2  # alice's two one after the other, bob's beside them
    assert max(lags) < 0.1  # the loop kept serving while they parsed


# -- connections and heads ------------------------------------------------------------------


async def test_connections_past_the_cap_are_turned_away_at_once(
    alice: AgentSession, logs: Logs
) -> None:
    held = [await Raw.open(alice) for _ in range(SMALL.max_connections)]
    listener = alice.door.listener
    await until(lambda: len(listener.open) == SMALL.max_connections, what="every one accepted")
    extra = await Raw.open(alice)
    turned_away = await extra.answer(timeout=1)
    assert turned_away.status == 503
    assert turned_away.headers["retry-after"] == "1"
    assert await extra.closed_within(1)
    assert refusals(logs, "too_many_connections")
    held.pop().close()
    await until(lambda: len(listener.open) < SMALL.max_connections, what="a place freed")
    assert (await exchange(alice, post("/v1/tasks/1/result", b"{}"))).status == 410
    for raw in held:
        raw.close()


async def test_one_agents_connections_do_not_count_against_another(
    make_session: Callable[..., Any],
) -> None:
    alice, bob = await make_session("alice"), await make_session("bob")
    held = [await Raw.open(alice) for _ in range(SMALL.max_connections + 2)]
    assert (await exchange(bob, post("/v1/tasks/1/result", b"{}"))).status == 410
    for raw in held:
        raw.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/tasks/next?" + b"x" * 2000 + b" HTTP/1.1\r\n\r\n",
        b"GET /v1/tasks/next HTTP/1.1\r\nX-Long: " + b"y" * 2000 + b"\r\n\r\n",
        b"GET /v1/tasks/next HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 20 + b"\r\n",
    ],
    ids=["request_line", "one_header", "header_count"],
)
async def test_request_head_past_the_limits_is_a_400(
    alice: AgentSession, head: bytes, logs: Logs
) -> None:
    answer = await exchange(alice, head)
    assert answer.status == 400
    assert answer.json()["accepted"] is False
    assert refusals(logs, "request_head_too_large")


async def test_garbage_bytes_get_a_one_line_400_not_a_traceback(
    alice: AgentSession, logs: Logs, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await Raw.open(alice)
    await raw.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 garbage \xff\xfe\r\n\r\n")
    answer = await raw.answer()
    assert answer.status == 400 and answer.body.count(b"\n") == 0
    assert await raw.closed_within(1)
    assert refusals(logs, "malformed_request")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(
    alice: AgentSession, logs: Logs
) -> None:
    raw = await Raw.open(alice)
    started = time.monotonic()
    assert await raw.closed_within(3)
    assert SMALL.head_timeout - 0.1 < time.monotonic() - started < SMALL.head_timeout + 1
    await until(lambda: refusals(logs, "no_request"), what="the refusal logged")


async def test_a_head_sent_byte_by_byte_is_cut_at_the_head_deadline(
    alice: AgentSession, logs: Logs
) -> None:
    raw = await Raw.open(alice)
    started = time.monotonic()
    head = b"GET /v1/tasks/next HTTP/1.1\r\nX-Slow: " + b"z" * 100
    with pytest.raises(ConnectionError):
        for byte in head:
            await raw.send(bytes([byte]))
            await asyncio.sleep(SLOW_SENDER_PACE)
        raise AssertionError("the whole slow head was accepted")
    assert time.monotonic() - started < SMALL.head_timeout + 1
    await until(lambda: refusals(logs, "incomplete_request"), what="the refusal logged")


async def test_the_agents_held_open_request_for_work_outlives_the_head_deadline(
    alice: AgentSession,
) -> None:
    raw = await Raw.open(alice)
    await raw.send(b"GET /v1/tasks/next HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.sleep(SMALL.head_timeout * 3)  # idle, after its head: legitimately waiting
    running = asyncio.create_task(alice.run(task(11), timeout=5))
    offered = await raw.answer()
    assert offered.status == 200 and offered.json()["id"] == 11
    await raw.send(post("/v1/tasks/11/result", TaskResult(text="done").to_json()))
    assert (await raw.answer()).status == 200
    assert (await running).text == "done"
    raw.close()


async def test_keep_alive_connection_serves_again_within_the_deadline(
    alice: AgentSession,
) -> None:
    raw = await Raw.open(alice)
    for _ in range(3):
        await raw.send(post("/v1/tasks/1/result", b"{}"))
        assert (await raw.answer()).status == 410
        await asyncio.sleep(SMALL.head_timeout / 3)
    raw.close()


async def test_pipelined_requests_are_each_checked_and_answered_in_turn(
    alice: AgentSession,
) -> None:
    raw = await Raw.open(alice)
    # two whole requests and the head of a third, bad one, in one write: the bodies are not
    # taken for heads, and the bad head is refused after the answers before it
    await raw.send(
        post("/v1/tasks/1/result", b"{}")
        + post("/v1/tasks/2/result", b"{}")
        + b"GET /v1/tasks/next HTTP/1.1\r\nX-Long: "
        + b"y" * 2000
        + b"\r\n\r\n"
    )
    assert [(await raw.answer()).status for _ in range(3)] == [410, 410, 400]
    assert await raw.closed_within(2)


async def test_a_handler_bug_is_a_json_500_and_a_log_line_not_a_storm(
    alice: AgentSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(alice.proxy, "handle", broken)
    body = b'{"model": "m"}'
    out = io.StringIO()
    clawpen_logging.configure("info", out)  # the real pipeline, with its repeat limiter
    try:
        answers = [await exchange(alice, post("/v1/messages", body)) for _ in range(40)]
    finally:
        clawpen_logging.configure("info")
    assert {a.status for a in answers} == {500}
    assert all(a.json()["error"] for a in answers)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [e for e in lines if e["event"] == "agent_request_failed"]
    assert 1 <= len(failed) <= 12  # a burst, then about one a second
    assert "RuntimeError: bug" in failed[0]["exception"]


# -- liveness and the refusal log ------------------------------------------------------------


async def test_agent_is_alive_from_its_first_request_for_work_until_it_fails(
    alice: AgentSession,
) -> None:
    alice.expect_agent()
    assert not alice.alive
    raw = await Raw.open(alice)
    await raw.send(b"GET /v1/tasks/next HTTP/1.1\r\nHost: a\r\n\r\n")
    await alice.wait_connected(2)
    assert alice.alive
    running = asyncio.create_task(alice.run(task(3), timeout=5))
    await raw.answer()
    await raw.send(post("/v1/tasks/3/result", TaskResult(text="ok").to_json()))
    await raw.answer()
    await running
    assert not alice.connected and alice.alive  # between tasks: not waiting, but running
    await alice.fail_all(AgentGone("container exited"))
    assert not alice.alive
    raw.close()
