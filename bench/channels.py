"""Dispatch overhead per channel: what each platform's adapter adds to one message, against the
CLI (no adapter, no network) as the floor.

Adding a channel is one entry in ``CHANNELS``: an async context manager that starts the fake
platform and yields a ``Platform`` (its config block, the chat to pair, how to push a user's
message and how to wait for a reply text).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from clawpen.channels.base import Accept, Channel
from clawpen.channels.cli import CliChannel
from clawpen.models import Decision, InboundMessage, OutboundMessage

from .fakes import (
    UNPACED,
    Arrivals,
    BenchDiscord,
    BenchSlack,
    Roundtrip,
    chat_id,
    fake_model,
    fake_telegram,
)
from .floors import commit_latencies
from .harness import BenchContext, Row, benchmark, ms
from .inprocess import Probes, orchestrator

AGENT = "a00"
WARMUP = 5
REPLY_TIMEOUT = 30.0
SLACK_DM = "D0BENCH01"


@dataclass
class Platform:
    """One channel under test, its fake platform running.

    ``block``: its ``channels.NAME`` config (pacing is turned off for every channel);
    ``chat``: the chat to pair with the agent (None: the channel needs no pairing);
    ``push(text)``: a user writes ``text``; returns the message's platform id (what the log
    events name it by) once the platform has it;
    ``expect(text)``: a future resolving to when a reply with exactly ``text`` reached the
    platform (``time.time()``), to be called before the push;
    ``connected()``: returns once the adapter is connected (messages pushed earlier may be lost);
    ``adapter``: the bench's own adapter, run inside the orchestrator (the CLI); None: the
    platform's plugin, in a process of its own as in production.
    """

    block: dict[str, Any]
    chat: str | None
    push: Callable[[str], Awaitable[str]]
    expect: Callable[[str], asyncio.Future[float]]
    connected: Callable[[], Awaitable[None]]
    adapter: Channel | None = None


async def _at_once() -> None:
    """Nothing to wait for: the platform holds messages until the adapter asks."""


class TimedCli(CliChannel):
    """The CLI channel as ``clawpen chat`` drives it (``ask``), noting each message's platform
    id as it enters ``accept`` and the time each reply reaches ``send``."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = Arrivals()
        self._ids: dict[str, asyncio.Future[str]] = {}
        self._asks: set[asyncio.Task[str]] = set()
        self._context = contextvars.copy_context()

    async def run(self, accept: Accept) -> None:
        self._context = contextvars.copy_context()  # the orchestrator's: its probes listen there

        async def noting(message: InboundMessage) -> Decision | None:
            waiter = self._ids.pop(message.text, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.platform_id)
            return await accept(message)

        await super().run(noting)

    async def send(self, message: OutboundMessage) -> str:
        self.replies.arrived(message.text, time.time())
        return await super().send(message)

    async def push(self, text: str) -> str:
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._ids[text] = waiter
        ask = self.ask(AGENT, text, sender="bench")
        task = asyncio.create_task(ask, context=self._context)
        self._asks.add(task)
        task.add_done_callback(self._asked)
        return await waiter

    def _asked(self, task: asyncio.Task[str]) -> None:
        """An ask that failed (rejected, cancelled) fails whoever waits on it."""
        self._asks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            waiters: list[asyncio.Future[Any]] = [*self._ids.values()]
            waiters += self.replies.waiters.values()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)


@contextlib.asynccontextmanager
async def cli() -> AsyncIterator[Platform]:
    channel = TimedCli()
    yield Platform({}, None, channel.push, channel.replies.expect, _at_once, adapter=channel)


@contextlib.asynccontextmanager
async def telegram() -> AsyncIterator[Platform]:
    async with fake_telegram() as fake:
        block = {"token": fake.token, "api_base_url": fake.url, "poll_timeout": 10}

        async def push(text: str) -> str:
            return str(await fake.push_text(chat_id(0), text))

        yield Platform(block, str(chat_id(0)), push, fake.expect, _at_once)


@contextlib.asynccontextmanager
async def slack() -> AsyncIterator[Platform]:
    fake = BenchSlack()
    await fake.start()
    try:
        block = {"bot_token": fake.bot_token, "app_token": fake.app_token, "api_base_url": fake.url}

        async def push(text: str) -> str:
            return await fake.post_user_message(SLACK_DM, text)

        async def connected() -> None:
            await fake.wait_for_connections(1, timeout=60)

        yield Platform(block, SLACK_DM, push, fake.replies.expect, connected)
    finally:
        await fake.close()


@contextlib.asynccontextmanager
async def discord() -> AsyncIterator[Platform]:
    fake = BenchDiscord()
    await fake.start()
    try:
        block = {"token": fake.token, "api_base_url": fake.api_base_url}

        async def push(text: str) -> str:
            return await fake.post_user_message(fake.dm_channel_id, text, guild=False)

        async def connected() -> None:
            await fake.wait_connected(timeout=60)

        yield Platform(block, fake.dm_channel_id, push, fake.replies.expect, connected)
    finally:
        await fake.close()


FLOOR = "cli"
CHANNELS: dict[str, Callable[[], AbstractAsyncContextManager[Platform]]] = {
    "cli": cli,
    "telegram": telegram,
    "slack": slack,
    "discord": discord,
}
"""Every channel measured, by name: how to start its fake platform. The first is the floor."""


def config(ctx: BenchContext, model_url: str, platforms: dict[str, Platform]) -> dict[str, Any]:
    """One warm agent, in-process, paired with a chat on every platform; no pacing anywhere."""
    return {
        "data_dir": str(ctx.data_dir("channels")),
        "model": {"name": "claude-bench", "base_url": model_url, "api_key": ctx.api_key},
        "agents": [{"id": AGENT, "system_prompt": "You are a benchmark.", "warm": True}],
        "channels": {
            name: {**platform.block, "rate_limit": UNPACED} for name, platform in platforms.items()
        },
        "pairings": [
            {"channel": f"{name}:{platform.chat}", "agent": AGENT}
            for name, platform in platforms.items()
            if platform.chat is not None
        ],
    }


async def roundtrip(platform: Platform, text: str) -> Roundtrip:
    """A user writes ``text`` and waits for the echo."""
    waiter = platform.expect(f"echo: {text}")
    pushed = time.time()
    platform_id = await platform.push(text)
    async with asyncio.timeout(REPLY_TIMEOUT):
        arrived = await waiter
    return Roundtrip(pushed, arrived, platform_id)


@benchmark(
    "channels",
    "Dispatch overhead per channel (warm in-process agent)",
    """One orchestrator of this tree in the bench process with every channel that has a fake
    here: the CLI (the floor: no adapter, no network, as `clawpen chat` reaches it through the
    admin socket, minus the socket), Telegram, Slack (Socket Mode) and Discord (gateway), the
    platforms' adapters each in a process of their own as in production, pacing off. One warm
    agent paired with a chat on each; the agent is in-process (`InProcessRuntime`, a thread of
    the orchestrator, no container) so that its own time stays small and steady and the
    channel's share shows. One message at a time (each waits for its reply), round robin over
    the channels (the order rotates every round, so drift hits all). End to end: the user's
    message pushed into the fake platform -> the reply reached it. Inbound: the push ->
    `message_arrived` (`Intake.accept` entered in the orchestrator: the fake's delivery,
    the adapter, its process hop). Outbound: `reply_sending` (just before the channel's send)
    -> the reply reached the fake (the process hop, the adapter, its HTTP call). Inside the
    agent: its own `agentReceived` -> `agentAnswered` (the model call), for scale. The ratio
    rows divide a channel's end-to-end p50 by the CLI's.""",
)
async def channels(ctx: BenchContext) -> list[Row]:
    count = ctx.size(500, 100)
    trips: dict[str, list[Roundtrip]] = {name: [] for name in CHANNELS}
    async with contextlib.AsyncExitStack() as stack, fake_model(ctx) as model:
        platforms = {
            name: await stack.enter_async_context(start()) for name, start in CHANNELS.items()
        }
        adapters = {n: p.adapter for n, p in platforms.items() if p.adapter is not None}
        raw = config(ctx, model.url, platforms)
        async with orchestrator(ctx, raw, "inprocess", channels=adapters) as (orch, probes):
            for platform in platforms.values():
                await platform.connected()
            status = (await orch.status())["channels"]
            alone = [n for n in platforms if n not in adapters and "pid" not in status[n]]
            if alone:  # what this benchmark says it measures would not hold
                raise RuntimeError(f"adapters not in processes of their own: {alone}")
            names = list(platforms)
            for i in range(WARMUP):
                for name in names:
                    await roundtrip(platforms[name], f"warmup-{name}-{i}")
            for i in range(count):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    trip = await roundtrip(platforms[name], f"channels-{name}-{i:05d}")
                    trips[name].append(trip)
    out = rows(trips, probes)
    commits = ms(commit_latencies(ctx.data_dir("commits"), ctx.size(1000, 200)))
    out.append(Row("floor: one SQLite commit (WAL, synchronous=FULL) here", "ms", commits))
    ctx.note(
        f"The CLI's end to end ({out[0].p50:.2f} ms p50) is the orchestrator and the agent with"
        " no adapter: every channel pays it; what a channel adds on top is its adapter, its"
        " process hop and its fake platform's protocol on loopback. The store commits the"
        " message, the task claim and the outcome on the way; a bare commit costs"
        f" {out[-1].p50:.2f} ms (p50) on this disk."
    )
    return out


def rows(trips: dict[str, list[Roundtrip]], probes: Probes) -> list[Row]:
    panel = "End to end per channel, warm in-process agent"
    out: list[Row] = []
    ends: dict[str, Row] = {}
    for name, taken in trips.items():
        ends[name] = Row(
            f"{name}: end to end, push -> reply at the platform",
            "ms",
            ms(t.seconds for t in taken),
            plot=panel,
        )
        out += [
            ends[name],
            Row(
                f"{name}: inbound, push -> message_arrived",
                "ms",
                ms(probes.arrived[t.platform_id] - t.pushed for t in taken),
            ),
            Row(
                f"{name}: inside the agent (its own clock)",
                "ms",
                ms(probes.inside(t.platform_id) for t in taken),
            ),
            Row(
                f"{name}: outbound, reply_sending -> reply at the platform",
                "ms",
                ms(t.arrived - probes.sending[probes.task_of[t.platform_id]] for t in taken),
            ),
        ]
    floor = ends[FLOOR].p50
    out += [
        Row(
            f"{name}: end to end p50 / {FLOOR}'s",
            "ratio",
            [row.p50 / floor],
            note=f"{row.p50:.2f} ms / {floor:.2f} ms",
        )
        for name, row in ends.items()
        if name != FLOOR
    ]
    return out
