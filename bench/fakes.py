"""The outside world on loopback: the fake Anthropic API, the fake Telegram Bot API, Slack and
Discord (each timestamps every reply as it arrives), and the clawpen configs that point at
them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.fake_telegram import FakeTelegram

from clawpen.config import Settings
from clawpen.demo.model import FakeModel

from .harness import BenchContext

FIRST_CHAT = 1001
UNPACED = {"per_chat": 0, "overall": 0}
"""``channels.telegram.rate_limit`` that turns off Telegram's default pacing (1 message/s per
chat, 30/s in all): the fake has no limits, and the baseline paces nothing."""


@dataclass
class BenchTelegram(FakeTelegram):
    """The fake Bot API, timestamping every sendMessage as it arrives.

    ``expect(text)`` gives a future that resolves to the arrival time of a reply with exactly
    that text; ``on_reply`` sees every reply (for counting batched ones)."""

    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    on_reply: Callable[[str, float], None] | None = None

    async def start(self, port: int = 0) -> str:
        # As FakeTelegram.start, but a held-open getUpdates is cancelled when the client goes
        # away, so that closing does not wait out the long-poll timeout.
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._call)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self.url

    def expect(self, text: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[text] = future
        return future

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        arrived = time.time()
        response = await super()._send_message(params)
        if response.status == 200:
            text = str(params.get("text", ""))
            if self.on_reply is not None:
                self.on_reply(text, arrived)
            waiter = self.waiters.pop(text, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(arrived)
        return response


@dataclass
class Arrivals:
    """Replies by text: ``expect(text)`` gives a future that resolves to the arrival time
    (``time.time()``) of the next reply with exactly that text."""

    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def expect(self, text: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[text] = future
        return future

    def arrived(self, text: str, at: float) -> None:
        waiter = self.waiters.pop(text, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)


@dataclass
class BenchSlack(FakeSlack):
    """The fake Slack, timestamping every ``chat.postMessage`` it accepts as it arrives."""

    replies: Arrivals = field(default_factory=Arrivals)

    async def _post_message(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        arrived = time.time()
        before = len(self.posted)
        response = await super()._post_message(request, params)
        if len(self.posted) > before:
            self.replies.arrived(str(params.get("text", "")), arrived)
        return response


@dataclass
class BenchDiscord(FakeDiscord):
    """The fake Discord, timestamping every message post it accepts as it arrives."""

    replies: Arrivals = field(default_factory=Arrivals)

    async def _post_message(self, request: web.Request) -> web.Response:
        arrived = time.time()
        before = len(self.sent)
        response = await super()._post_message(request)
        if len(self.sent) > before:
            self.replies.arrived(str(self.sent[-1].get("content", "")), arrived)
        return response


@contextlib.asynccontextmanager
async def fake_model(ctx: BenchContext) -> AsyncIterator[FakeModel]:
    model = FakeModel(api_key=ctx.api_key, delay=0.0)
    await model.start()
    try:
        yield model
    finally:
        await model.close()


@contextlib.asynccontextmanager
async def fake_telegram() -> AsyncIterator[BenchTelegram]:
    telegram = BenchTelegram()
    await telegram.start()
    try:
        yield telegram
    finally:
        await telegram.close()


@dataclass(frozen=True)
class Roundtrip:
    pushed: float  # time.time() just before the user's message went into the fake
    arrived: float  # when the echo reached the fake
    platform_id: str  # the message's id at the platform: what the log events name it by

    @property
    def seconds(self) -> float:
        return self.arrived - self.pushed


async def roundtrip(
    telegram: BenchTelegram, chat: int, text: str, timeout: float = 60
) -> Roundtrip:
    """A user writes ``text`` and waits for the echo."""
    waiter = telegram.expect(f"echo: {text}")
    pushed = time.time()
    platform_id = await telegram.push_text(chat, text)
    async with asyncio.timeout(timeout):
        arrived = await waiter
    return Roundtrip(pushed, arrived, str(platform_id))


# -- configuration ---------------------------------------------------------------------------------


def agent_id(i: int) -> str:
    return f"a{i:02d}"


def chat_id(i: int) -> int:
    return FIRST_CHAT + i


CONVERSATIONS = 25  # chats of agent a00 that one-at-a-time benchmarks take turns in


def conversation(i: int) -> int:
    """The chat of message ``i`` in a one-at-a-time benchmark. Taking turns over a few chats
    keeps each conversation short, so that the agent's work per message (which grows with its
    history, and which differs between versions: the baseline kept 40 messages, this tree the
    whole session) stays the same across a run and between the versions compared."""
    return FIRST_CHAT + 5000 + i % CONVERSATIONS


def config(
    data_dir: Path,
    model_url: str,
    api_key: str,
    telegram: FakeTelegram,
    agents: int = 1,
    *,
    poll_timeout: int = 10,
    max_containers: int = 10,
    **agent_options: Any,
) -> dict[str, Any]:
    """A clawpen config for this tree: agent ``aNN`` paired with telegram chat ``1001 + NN``,
    Telegram's pacing off (``UNPACED``). ``Tree.adapt`` turns it into the baseline's."""
    return {
        "data_dir": str(data_dir),
        "max_containers": max_containers,
        "model": {"name": "claude-bench", "base_url": model_url, "api_key": api_key},
        "agents": [
            {"id": agent_id(i), "system_prompt": "You are a benchmark.", **agent_options}
            for i in range(agents)
        ],
        "channels": {
            "telegram": {
                "token": telegram.token,
                "api_base_url": telegram.url,
                "poll_timeout": poll_timeout,
                "rate_limit": UNPACED,
            }
        },
        "pairings": [
            *({"channel": f"telegram:{chat_id(i)}", "agent": agent_id(i)} for i in range(agents)),
            *(
                {"channel": f"telegram:{conversation(j)}", "agent": agent_id(0)}
                for j in range(CONVERSATIONS)
            ),
        ],
    }


def settings(raw: dict[str, Any]) -> Settings:
    return Settings.model_validate(raw)


def write_config(path: Path, raw: dict[str, Any]) -> dict[str, str]:
    """Write ``raw`` as a config file (JSON is YAML) with its secrets as ``env:`` references;
    returns the environment that resolves them."""
    env = {"ANTHROPIC_API_KEY": raw["model"]["api_key"]}
    on_disk = json.loads(json.dumps(raw))
    on_disk["model"]["api_key"] = "env:ANTHROPIC_API_KEY"
    if "telegram" in on_disk["channels"]:
        env["TELEGRAM_BOT_TOKEN"] = on_disk["channels"]["telegram"]["token"]
        on_disk["channels"]["telegram"]["token"] = "env:TELEGRAM_BOT_TOKEN"
    path.write_text(json.dumps(on_disk, indent=2) + "\n")
    return env
