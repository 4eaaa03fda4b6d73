"""The fake Telegram Bot API, driven by python-telegram-bot exactly as the channel drives it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import telegram
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter

from tests.fakes.fake_telegram import BOT_USER, FakeTelegram
from tests.waiting import until


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    client = telegram.Bot(fake.token, base_url=f"{fake.url}/bot")
    async with client:  # initialize() calls getMe
        yield client


def seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]


async def test_get_me_returns_the_bot(bot: telegram.Bot, fake: FakeTelegram) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (BOT_USER["id"], "clawpen_bot", True)
    assert "getMe" in fake.calls


async def test_get_updates_returns_pushed_messages(bot: telegram.Bot, fake: FakeTelegram) -> None:
    first = await fake.push_text(1001, "hello")
    await fake.push_text(2002, "from a group member", user_id=77)

    updates = await bot.get_updates(timeout=0)

    assert [u.message.text for u in updates if u.message] == ["hello", "from a group member"]
    one, two = updates
    assert one.message is not None
    assert one.message.message_id == first
    assert one.message.chat.id == 1001
    assert one.message.from_user is not None
    assert one.message.from_user.id == 1001
    assert two.message is not None
    assert two.message.from_user is not None
    assert two.message.from_user.id == 77
    assert two.update_id == one.update_id + 1


async def test_updates_are_redelivered_until_confirmed(
    bot: telegram.Bot, fake: FakeTelegram
) -> None:
    await fake.push_text(1001, "a")
    await fake.push_text(1001, "b")
    first = await bot.get_updates(timeout=0)
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [u.update_id for u in first]

    partly = await bot.get_updates(offset=first[0].update_id + 1, timeout=0)
    assert [u.message.text for u in partly if u.message] == ["b"]

    confirmed = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
    assert confirmed == ()
    assert fake.updates == []


async def test_long_poll_returns_as_soon_as_a_message_arrives(
    bot: telegram.Bot, fake: FakeTelegram
) -> None:
    polls = fake.calls.count("getUpdates")

    async def later() -> None:  # once the long poll is waiting in the fake
        await until(lambda: fake.calls.count("getUpdates") > polls, what="the long poll")
        await fake.push_text(1001, "there you are")

    started = time.monotonic()
    pusher = asyncio.create_task(later())
    updates = await bot.get_updates(timeout=5)
    await pusher
    assert time.monotonic() - started < 2
    assert [u.message.text for u in updates if u.message] == ["there you are"]


async def test_empty_long_poll_times_out_with_no_updates(bot: telegram.Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 < time.monotonic() - started < 3


async def test_send_message_is_recorded(bot: telegram.Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_message(chat_id=1001, text="hi there")
    await bot.send_message(chat_id=2002, text="someone else")

    assert sent.text == "hi there"
    assert sent.chat.id == 1001
    assert fake.texts_to(1001) == ["hi there"]
    assert fake.texts_to(2002) == ["someone else"]
    assert [m["message_id"] for m in fake.sent] == [sent.message_id, sent.message_id + 1]
    assert len(await fake.wait_for_sent(2, timeout=1)) == 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("x" * 4097, "too long", id="over_4096_characters"),
        pytest.param("x" * 4096, None, id="exactly_4096_characters"),
    ],
)
async def test_message_length_limit_is_enforced(
    bot: telegram.Bot, fake: FakeTelegram, text: str, error: str | None
) -> None:
    if error is None:
        await bot.send_message(chat_id=1001, text=text)
        assert fake.texts_to(1001) == [text]
    else:
        with pytest.raises(BadRequest, match=error):
            await bot.send_message(chat_id=1001, text=text)
        assert fake.sent == []


async def test_wrong_token_is_refused(fake: FakeTelegram) -> None:
    intruder = telegram.Bot("999:not-the-token", base_url=f"{fake.url}/bot")
    with pytest.raises(InvalidToken):
        await intruder.get_me()
    with pytest.raises(InvalidToken):
        await intruder.send_message(chat_id=1001, text="spoof")
    assert fake.sent == []
    assert fake.calls == []


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # int retry_after
async def test_injected_429_surfaces_as_retry_after(bot: telegram.Bot, fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", 429, retry_after=3)

    with pytest.raises(RetryAfter) as info:
        await bot.send_message(chat_id=1001, text="too fast")
    assert seconds(info.value.retry_after) == 3
    assert fake.sent == []

    await bot.send_message(chat_id=1001, text="now fine")  # only the next call fails
    assert fake.texts_to(1001) == ["now fine"]


async def test_injected_5xx_surfaces_as_network_error(
    bot: telegram.Bot, fake: FakeTelegram
) -> None:
    fake.fail_next("sendMessage", 500, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError):
            await bot.send_message(chat_id=1001, text="x")
    await bot.send_message(chat_id=1001, text="x")
    assert fake.texts_to(1001) == ["x"]


async def test_failures_are_per_method(bot: telegram.Bot, fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", 429, retry_after=1)
    await fake.push_text(1001, "still readable")
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["still readable"]
