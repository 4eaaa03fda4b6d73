"""Blocking work of one kind never waits for another kind's threads (issue 23): with the event
loop's default pool full, or with web fetches stalled by a slow-loris server, containers still
start and stop, and the door still parses large bodies."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from clawpen.door.caps import Door, DoorLimits
from clawpen.egress.netpolicy import LoopbackExceptions
from clawpen.egress.webfetch import FetchLimits, WebFetcher
from clawpen.runtime.docker import DockerRuntime
from tests.fakes.slowloris import SlowLoris

DEFAULT_POOL = min(32, (os.cpu_count() or 1) + 4)  # the loop's default executor: 6 on 2 CPUs
PROMPTLY = 5.0  # seconds; each call below takes milliseconds when it has a thread


def docker_runtime() -> DockerRuntime:
    """A runtime over a fake engine that answers at once: no containers run."""
    client = SimpleNamespace(containers=SimpleNamespace(list=lambda **kwargs: []))
    fake: Any = client
    return DockerRuntime(fake, "pools-test")


@pytest.fixture
async def default_pool_full() -> AsyncIterator[threading.Event]:
    """Every thread of the loop's default pool blocked until the test ends (or sets the
    event it is given)."""
    release = threading.Event()
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(DEFAULT_POOL)]
    yield release
    release.set()
    await asyncio.gather(*busy)


@pytest.fixture
async def slowloris() -> AsyncIterator[SlowLoris]:
    server = await SlowLoris().start()
    yield server
    await server.close()


@pytest.mark.usefixtures("default_pool_full")
async def test_container_calls_do_not_wait_for_the_default_pool() -> None:
    async with asyncio.timeout(PROMPTLY):
        assert await docker_runtime().running() == {}


async def test_large_bodies_are_parsed_without_the_default_pool(
    default_pool_full: threading.Event,
) -> None:
    big = b'{"text": "' + b"x" * 100 + b'"}'
    parse = asyncio.create_task(Door("alice", DoorLimits(inline_parse_max=10))._parse(big))
    done, _ = await asyncio.wait([parse], timeout=PROMPTLY)  # a parse outlives a cancel
    default_pool_full.set()
    assert done, "the door's parse waited for the default pool"
    assert await parse == {"text": "x" * 100}


async def test_containers_start_and_stop_while_many_fetches_hang_on_slow_servers(
    slowloris: SlowLoris,
) -> None:
    exceptions = LoopbackExceptions.parse([f"127.0.0.1:{slowloris.port}"])
    fetcher = WebFetcher(exceptions, limits=FetchLimits(timeout=120))
    count = max(8, DEFAULT_POOL + 2)
    url = f"http://127.0.0.1:{slowloris.port}/"
    fetches = [asyncio.create_task(fetcher.fetch(url, None, 100)) for _ in range(count)]
    try:
        await slowloris.wait_until(lambda s: s.opened >= DEFAULT_POOL, timeout=30)
        async with asyncio.timeout(PROMPTLY):  # the fetches are all still being dribbled to
            assert await docker_runtime().running() == {}
        await slowloris.wait_until(lambda s: s.opened == count, timeout=30)
        assert not any(fetch.done() for fetch in fetches)
    finally:
        for fetch in fetches:
            fetch.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)
    await slowloris.wait_until(lambda s: s.dropped == count, timeout=PROMPTLY)
