"""The ports anyone on the host can reach hold against a flood (issue 23): the dashboard, the
metrics port and the WhatsApp webhook cap their connections and close idle ones, so that the
orchestrator keeps file descriptors for its agents; the webhook refuses an unsigned body before
reading it; and JSON nested hundreds deep is a 400 everywhere, never a 500 with a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import structlog

from clawpen.app import Orchestrator
from clawpen.channels import wire
from clawpen.door.proxy import ModelProxy
from clawpen.door.server import AgentSession
from clawpen.ops.admin import ADMIN_SOCKET
from clawpen.ports import limits as portlimits
from clawpen.ports import listener
from clawpen.security.webauth import CSRF_HEADER, csrf_for
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel
from tests.fakes.fake_whatsapp import FakeWhatsApp
from tests.unit.channels.whatsapp.support import Core, running_adapter
from tests.waiting import until

TELEGRAM = {"cli": {}, "telegram": {"token": "123:abc"}}
PAIRED = [{"channel": "telegram:42", "agent": "assistant"}]
SMALL_PORT = {"max_connections": 4, "idle_timeout": 1.0}
ALICE = "15551234567"

Logs = list[MutableMapping[str, Any]]


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def tracebacks(logs: Logs) -> Logs:
    return [e for e in logs if "exc_info" in e or "exception" in e or e["log_level"] == "error"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # EMFILE: every one is taken
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- a flood of idle connections, from another process -------------------------------------------

FLOOD = """
import asyncio, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # not the orchestrator's lowered one

async def connect(port):
    try:  # a server that stopped accepting (its backlog full) leaves this one waiting
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return None

async def main():
    ports = [int(port) for port in sys.argv[2:]]
    tries = [connect(port) for port in ports for _ in range(int(sys.argv[1]))]
    held = [c for c in await asyncio.gather(*tries) if c is not None]
    print(len(held), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # hold them until told

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def flood(count: int, *ports: int) -> AsyncIterator[int]:
    """``count`` idle connections to each port, held by a process of their own (its file
    descriptors are not ours); yields how many were connected."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD,
        str(count),
        *map(str, ports),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = await process.stdout.readline()
        yield int(line)
    finally:
        process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@contextlib.contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE lowered to ``soft`` (the orchestrator's, in-process)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


async def test_idle_floods_on_the_dashboard_and_metrics_port_leave_room_for_model_calls(
    orchestrator_factory: Callable[..., Orchestrator],
) -> None:
    channel = MemoryChannel()
    metrics_port = free_port()
    orchestrator = orchestrator_factory(
        channels={"telegram": channel},
        config_channels=TELEGRAM,
        pairings=PAIRED,
        dashboard={"port": 0, "port_limits": SMALL_PORT},
        metrics_port=metrics_port,
        metrics_port_limits=SMALL_PORT,
    )
    async with running(orchestrator):
        assert orchestrator.dashboard is not None and orchestrator.dashboard.port is not None
        ports = (orchestrator.dashboard.port, metrics_port)
        await channel.push("42", "warm up")  # the agent runs: its socket and upstream are open
        await channel.wait_sent(1)
        baseline = open_files()
        # 2 x 300 idle connections against room for 200 more files: without caps, the flood
        # takes them all and the agent's next model call has no file descriptor left
        with open_files_limit(baseline + 200):
            async with flood(300, *ports) as connected:
                assert connected > 200
                await channel.push("42", "still there?")
                await channel.wait_sent(2, timeout=20)
                assert channel.texts_to("42")[-1] == "echo: still there?"  # not an apology
                # each port holds its cap; the rest were answered 503 and closed at once
                assert open_files() <= baseline + 2 * 4 + 4
                # and the idle ones that were let in are closed at the idle timeout
                await until(lambda: open_files() <= baseline + 4, what="idle connections closed")


# -- the WhatsApp webhook ----------------------------------------------------------------------


@pytest.fixture
async def meta() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp(redelivery_delays=(0.2, 0.5))
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def webhook(meta: FakeWhatsApp) -> AsyncIterator[tuple[str, int, Core]]:
    """The adapter with a small cap: (path, port, core)."""
    core = Core()
    async with running_adapter(meta, core, port_limits=SMALL_PORT) as adapter:
        port = int(adapter.server.url.rsplit(":", 1)[1])
        yield "/webhooks/whatsapp", port, core


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sends until it closes; None when it has not closed within ``timeout``."""
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return b"".join(chunks)


async def test_an_unsigned_or_badly_signed_body_is_refused_before_it_is_read(
    webhook: tuple[str, int, Core],
) -> None:
    path, port, _core = webhook
    for signature in ("", "X-Hub-Signature-256: sha256=nothex\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            f"{signature}Content-Length: 1000000\r\n\r\n"
        )
        writer.write(head.encode())  # and not a byte of the megabyte it announces
        answer = await read_all(reader, 3)
        writer.close()
        assert answer is not None, "the server waited for the body"
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]


async def test_idle_connections_to_the_webhook_are_capped_and_closed_and_meta_still_gets_in(
    webhook: tuple[str, int, Core], meta: FakeWhatsApp, logs: Logs
) -> None:
    _path, port, core = webhook
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(12)]
    meta.user_says(ALICE, "hello through the flood")  # Meta redelivers what was not a 200
    answers = await asyncio.gather(*(read_all(reader, 5) for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    # the cap's worth let in, said nothing, and closed at the idle timeout; the rest were
    # answered 503 at once
    assert sorted(answers, key=len) == [b""] * 4 + [listener.TURNED_AWAY] * 8
    [message] = await core.wait_for(1, timeout=10)
    assert message.text == "hello through the flood"
    refused = [e for e in logs if e["event"] == "connection_refused"]
    assert refused and refused[0]["reason"] == "too_many_connections"


SLOWLORIS_PACE = 0.1
"""Seconds between the trickled head's bytes: the slow client's pace, not a wait."""


async def test_a_head_trickled_byte_by_byte_is_cut_at_the_idle_timeout(
    webhook: tuple[str, int, Core],
) -> None:
    path, port, _core = webhook
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: a\r\n".encode()
    closed = asyncio.create_task(read_all(reader, 5))
    for byte in head:
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(SLOWLORIS_PACE)
    assert await closed is not None, "a trickled head kept its connection"
    writer.close()


# -- JSON nested hundreds deep -------------------------------------------------------------------


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


async def no_usage(agent: str, model: str, input_tokens: int, output_tokens: int) -> None:
    pass


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[AgentSession]:
    async with aiohttp.ClientSession() as upstream:
        proxy = ModelProxy(upstream, "http://127.0.0.1:9", "key", no_usage)
        session = AgentSession("mallory", tmp_path / "mallory", proxy)
        await session.start()
        yield session
        await session.close()


@pytest.mark.parametrize("depth", [120, 900, 950, 980, 5000])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/tasks/1/result", "/v1/jobs", "/v1/outbox"])
async def test_deep_json_to_the_door_is_a_400_without_a_traceback(
    door: AgentSession, logs: Logs, path: str, depth: int
) -> None:
    body = (
        '{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": '
        + deep(depth)
        + "}]}"
    )
    transport = httpx.AsyncHTTPTransport(uds=str(door.socket_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as agent:
        answer = await agent.post(path, content=body.encode())
    assert answer.status_code == 400, answer.text[:200]
    assert not tracebacks(logs)
    assert sum(len(repr(e)) for e in logs) < 2000  # one short line, not 120 KB


async def test_deep_json_in_a_signed_webhook_is_a_400(
    webhook: tuple[str, int, Core], meta: FakeWhatsApp, logs: Logs
) -> None:
    for depth in (900, 950, 5000):
        body = ('{"object": "whatsapp_business_account", "entry": ' + deep(depth) + "}").encode()
        status, _ = await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)})
        assert status == 400
    assert not tracebacks(logs)


async def test_a_deep_frame_from_an_adapter_is_a_frame_error() -> None:
    for depth in (900, 5000):
        reader = asyncio.StreamReader()
        reader.feed_data(('{"type": "inbound", "x": ' + deep(depth) + "}\n").encode())
        with pytest.raises(wire.FrameError, match="nested deeper"):
            await wire.read_frame(reader)


async def test_deep_json_to_the_admin_socket_and_dashboard_is_a_400(
    orchestrator_factory: Callable[..., Orchestrator], logs: Logs
) -> None:
    orchestrator = orchestrator_factory(dashboard={"port": 0})
    async with running(orchestrator):
        assert orchestrator.dashboard is not None
        body = ('{"chat": "telegram:1", "agent": ' + deep(950) + "}").encode()
        admin = httpx.AsyncHTTPTransport(uds=str(orchestrator.settings.data_dir / ADMIN_SOCKET))
        async with httpx.AsyncClient(transport=admin, base_url="http://clawpen") as owner:
            on_socket = await owner.post("/v1/pairings", content=body)
        token = orchestrator.http_token
        headers = {"Authorization": f"Bearer {token}", CSRF_HEADER: csrf_for(token)}
        url = f"http://127.0.0.1:{orchestrator.dashboard.port}"
        async with httpx.AsyncClient(base_url=url, headers=headers) as page:
            on_page = await page.post("/api/pairings", content=body)
    assert (on_socket.status_code, on_page.status_code) == (400, 400)
    assert "nested deeper" in on_socket.text and "nested deeper" in on_page.text
    assert not tracebacks(logs)


def test_json_within_the_depth_is_parsed_as_before() -> None:
    from clawpen.ports import safejson

    assert safejson.loads(deep(100)) == json.loads(deep(100))
    assert safejson.loads(b'{"a": [1, {"b": "[[[[[[["}]}') == {"a": [1, {"b": "[[[[[[["}]}
    with pytest.raises(safejson.TooDeep):
        safejson.loads(deep(101))


@pytest.mark.parametrize(
    ("limit", "agents", "short"),
    [(1024, 3, 0), (1024, 20, 48 + 20 * 64 + portlimits.RESERVE - 1024), (65536, 500, 0)],
)
def test_an_open_files_limit_below_every_cap_and_the_reserve_is_found(
    limit: int, agents: int, short: int
) -> None:
    assert portlimits.files_short(limit, public=48, agents=agents, per_agent=64) == short


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = before[0] // 2
    # an unlimited hard limit is left alone: there is no number to raise the soft one to
    expected = lowered if before[1] == resource.RLIM_INFINITY else before[1]
    with open_files_limit(lowered):
        assert portlimits.raise_open_files_limit() == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == expected
