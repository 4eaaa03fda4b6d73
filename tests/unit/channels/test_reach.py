"""What each client library raises when its platform cannot be reached is told apart from any
other failure (``channels/reach.py``), so every adapter stays up and retries the same way."""

from __future__ import annotations

import socket

import aiohttp
import aioimaplib
import pytest
from telegram import Bot
from telegram.error import InvalidToken

from clawpen.channels.reach import cause_of, endpoint_of
from clawpen.channels.telegram.adapter import TelegramSettings


def refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_python_telegram_bot_refused_is_connection_refused() -> None:
    bot = Bot("123:abc", base_url=f"http://127.0.0.1:{refused_port()}/bot")
    with pytest.raises(Exception) as raised:
        await bot.initialize()
    assert cause_of(raised.value) == "connection refused"


async def test_aiohttp_refused_is_connection_refused_and_an_unknown_host_is_named() -> None:
    """slack_sdk, discord.py and the WhatsApp adapter all connect through aiohttp."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError) as refused:
            await session.get(f"http://127.0.0.1:{refused_port()}/")
        with pytest.raises(aiohttp.ClientError) as unknown:
            await session.get("http://no-such-host.invalid/")
    assert cause_of(refused.value) == "connection refused"
    assert cause_of(unknown.value) == "host name not resolved"


async def test_aioimaplib_refused_is_connection_refused() -> None:
    imap = aioimaplib.IMAP4("127.0.0.1", refused_port(), timeout=5)
    with pytest.raises(Exception) as raised:
        await imap.wait_hello_from_server()
    assert cause_of(raised.value) == "connection refused"


def test_other_failures_are_not_taken_for_an_unreachable_platform() -> None:
    assert cause_of(InvalidToken("refused")) is None
    assert cause_of(PermissionError(13, "Permission denied")) is None
    assert cause_of(ValueError("a bug")) is None


def test_the_endpoint_is_the_platforms_address_without_the_path() -> None:
    settings = TelegramSettings(token="123:abc")
    assert endpoint_of(settings) == "https://api.telegram.org"


def test_a_reach_frame_from_an_adapter_is_checked_before_it_is_believed() -> None:
    from clawpen.channels import wire

    frame = wire.reach_frame("unreachable", "cannot reach x" + "!" * 10_000)
    state, error = wire.parse_reach(frame)
    assert state == "unreachable" and len(error) <= wire.MAX_ERROR
    with pytest.raises(wire.FrameError):
        wire.parse_reach({"type": "reach", "state": "disabled", "error": ""})
    with pytest.raises(wire.FrameError):
        wire.parse_reach({"type": "reach", "state": "running", "error": 7})
