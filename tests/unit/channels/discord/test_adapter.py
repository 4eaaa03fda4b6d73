"""The Discord adapter against the fake Discord: what it hands the core, and what it sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from clawpen.app import Orchestrator
from clawpen.channels.base import MAX_ATTACHMENT_BYTES, ChannelFatal, SendError
from clawpen.channels.discord import plugin
from clawpen.channels.discord.adapter import DiscordAdapter, DiscordSettings, strip_mention
from clawpen.errors import StoreUnavailable
from clawpen.models import Address, Decision, InboundMessage, OutboundMessage, Route
from tests.conftest import running
from tests.fakes.fake_discord import SEND_MESSAGE, FakeDiscord, FakeFile
from tests.waiting import until


class Recorder:
    """An ``accept`` that records what it is handed; it can refuse (the store is down)."""

    def __init__(self, refuse: int = 0) -> None:
        self.handed: list[InboundMessage] = []
        self.refuse = refuse

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.handed.append(message)
        if self.refuse:
            self.refuse -= 1
            raise StoreUnavailable("disk full")
        return Route("assistant")

    async def count(self, n: int) -> list[InboundMessage]:
        await until(lambda: len(self.handed) >= n, timeout=30, what=f"{n} messages handed in")
        return self.handed

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.handed]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


def adapter_for(fake: FakeDiscord, token: str | None = None) -> DiscordAdapter:
    settings = DiscordSettings(token=token or fake.token, api_base_url=fake.api_base_url)
    return DiscordAdapter(settings)


@contextlib.asynccontextmanager
async def running_adapter(
    fake: FakeDiscord, accept: Recorder | None = None
) -> AsyncIterator[tuple[DiscordAdapter, Recorder]]:
    adapter = adapter_for(fake)
    recorder = accept or Recorder()
    task = asyncio.create_task(adapter.run(recorder))
    try:
        await fake.wait_connected()
        yield adapter, recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def dm(fake: FakeDiscord) -> Address:
    return Address("discord", fake.dm_channel_id)


async def test_a_dm_is_handed_over_addressed(fake: FakeDiscord) -> None:
    async with running_adapter(fake) as (_, accept):
        message_id = await fake.post_user_message(fake.dm_channel_id, "hello", guild=False)
        (message,) = await accept.count(1)
    assert message.address == dm(fake)
    assert (message.text, message.platform_id, message.addressed) == ("hello", message_id, True)
    assert message.sender_id == fake.user["id"]


async def test_a_guild_message_is_addressed_only_when_it_mentions_the_bot(
    fake: FakeDiscord,
) -> None:
    async with running_adapter(fake) as (_, accept):
        await fake.post_user_message(fake.channel_id, "just chatting")
        await fake.post_user_message(fake.channel_id, "what time is it?", mentions_bot=True)
        chatting, asked = await accept.count(2)
    assert (chatting.text, chatting.addressed) == ("just chatting", False)
    assert (asked.text, asked.addressed) == ("what time is it?", True)  # mention stripped
    assert asked.address == Address("discord", fake.channel_id)


def test_only_the_bots_own_mention_is_stripped() -> None:
    assert strip_mention("<@42> hi <@7>", 42) == "hi <@7>"
    assert strip_mention("hey <@!42>, look", 42) == "hey , look"


async def test_own_posts_and_other_bots_are_not_handed_over(fake: FakeDiscord) -> None:
    async with running_adapter(fake) as (adapter, accept):
        await adapter.send(OutboundMessage(dm(fake), "I am the bot"))  # echoed on the gateway
        await fake.post_user_message(fake.dm_channel_id, "beep", guild=False, author_bot=True)
        await fake.post_user_message(fake.dm_channel_id, "a human", guild=False)
        await accept.count(1)
    assert accept.texts == ["a human"]  # the two before it were seen first, and dropped


async def test_a_reply_keeps_the_id_of_the_message_it_answers(fake: FakeDiscord) -> None:
    async with running_adapter(fake) as (_, accept):
        first = await fake.post_user_message(fake.dm_channel_id, "one", guild=False)
        await fake.post_user_message(fake.dm_channel_id, "two", guild=False, reply_to=first)
        _, reply = await accept.count(2)
    assert reply.reply_to == first


async def test_a_dropped_gateway_resumes_and_nothing_is_lost_or_doubled(
    fake: FakeDiscord,
) -> None:
    async with running_adapter(fake) as (_, accept):
        for i in range(5):
            await fake.post_user_message(fake.dm_channel_id, f"before {i}", guild=False)
        await fake.drop_connection()
        for i in range(5):
            await fake.post_user_message(fake.dm_channel_id, f"after {i}", guild=False)
        await accept.count(10)
        await fake.wait_for(lambda: fake.resumes == 1)
        await fake.post_user_message(fake.dm_channel_id, "last", guild=False)
        await accept.count(11)
    expected = [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)] + ["last"]
    assert accept.texts == expected
    assert fake.identifies == 1


async def test_a_message_replayed_on_resume_is_handed_over_again_with_its_id(
    fake: FakeDiscord,
) -> None:
    """Discord may send again what the client already had; the core drops it by its id."""
    async with running_adapter(fake) as (_, accept):
        first = await fake.post_user_message(fake.dm_channel_id, "once", guild=False)
        await accept.count(1)
        fake.resend_on_resume = 1
        await fake.drop_connection()
        await fake.post_user_message(fake.dm_channel_id, "twice?", guild=False)
        await accept.count(3)
    assert [m.platform_id for m in accept.handed[:2]] == [first, first]
    assert accept.texts == ["once", "once", "twice?"]


async def test_a_message_the_store_could_not_take_is_handed_over_until_it_is(
    fake: FakeDiscord,
) -> None:
    async with running_adapter(fake, Recorder(refuse=2)) as (_, accept):
        await fake.post_user_message(fake.dm_channel_id, "keep me", guild=False)
        await accept.count(3)
        await fake.post_user_message(fake.dm_channel_id, "next", guild=False)
        await accept.count(4)
    assert accept.texts == ["keep me", "keep me", "keep me", "next"]


async def test_a_replayed_message_is_answered_once(
    orchestrator_factory: Callable[..., Orchestrator], fake: FakeDiscord
) -> None:
    orchestrator = orchestrator_factory(
        channels=discord_config(fake),
        pairings=[{"channel": f"discord:{fake.dm_channel_id}", "agent": "assistant"}],
    )
    async with running(orchestrator):
        await fake.wait_connected()
        await fake.post_user_message(fake.dm_channel_id, "first", guild=False)
        await fake.wait_for(lambda: len(fake.sent) == 1)
        fake.resend_on_resume = 3  # "first", our answer's echo, and more: all seen before
        await fake.drop_connection()
        await fake.post_user_message(fake.dm_channel_id, "second", guild=False)
        await fake.wait_for(lambda: len(fake.sent) == 2)
        counts = await orchestrator.store.counts()
    assert fake.texts_to(fake.dm_channel_id) == ["echo: first", "echo: second"]
    assert fake.resumes == 1
    assert counts.get("messages.answered") == 2


def discord_config(fake: FakeDiscord) -> dict[str, Any]:
    return {
        "cli": {},
        "discord": {"token": fake.token, "api_base_url": fake.api_base_url},
    }


async def test_a_refused_token_is_fatal_and_names_the_setting(fake: FakeDiscord) -> None:
    adapter = adapter_for(fake, token="revoked")
    with pytest.raises(ChannelFatal) as fatal:
        await adapter.run(Recorder())
    assert str(fatal.value) == "discord: the bot token was refused; check channels.discord.token"


async def test_a_missing_message_content_intent_is_fatal_and_says_so(fake: FakeDiscord) -> None:
    fake.privileged_intents = False
    with pytest.raises(ChannelFatal) as fatal:
        async with asyncio.timeout(30):
            await adapter_for(fake).run(Recorder())
    assert "Message Content intent" in str(fatal.value)


async def test_attachments_are_downloaded_and_an_oversize_one_is_named(
    fake: FakeDiscord,
) -> None:
    picture = FakeFile("cat.png", "image/png", b"\x89PNG fake")
    huge = FakeFile("huge.bin", "application/octet-stream", bytes(MAX_ATTACHMENT_BYTES + 1))
    async with running_adapter(fake) as (_, accept):
        await fake.post_user_message(
            fake.dm_channel_id, "look", guild=False, attachments=[picture, huge]
        )
        (message,) = await accept.count(1)
    assert [(a.name, a.media_type, a.data) for a in message.attachments] == [
        ("cat.png", "image/png", b"\x89PNG fake")
    ]
    assert message.text.splitlines() == [
        "look",
        "[huge.bin: not downloaded, 20.0 MB is over the 20 MB limit]",
    ]
    assert len(fake.downloads) == 1  # the large one was never fetched


async def test_a_thread_message_is_addressed_to_its_thread_and_answered_there(
    fake: FakeDiscord,
) -> None:
    async with running_adapter(fake) as (adapter, accept):
        thread = await fake.create_thread(fake.channel_id)
        asked = await fake.post_user_message(thread, "in the thread", mentions_bot=True)
        (message,) = await accept.count(1)
        await adapter.typing(message.address, asked, True)
        await adapter.send(OutboundMessage(message.address, "answer", reply_to=asked))
    assert message.address == Address("discord", fake.channel_id, thread)
    assert message.addressed
    assert fake.typing == [thread]
    (sent,) = fake.sent
    assert sent["channel_id"] == thread
    assert sent["message_reference"]["message_id"] == asked


async def test_a_reply_in_a_guild_channel_quotes_the_question_and_a_dm_reply_does_not(
    fake: FakeDiscord,
) -> None:
    async with running_adapter(fake) as (adapter, accept):
        asked = await fake.post_user_message(fake.channel_id, "q", mentions_bot=True)
        in_dm = await fake.post_user_message(fake.dm_channel_id, "q", guild=False)
        await accept.count(2)
        channel = Address("discord", fake.channel_id)
        await adapter.send(OutboundMessage(channel, "a", reply_to=asked))
        await adapter.send(OutboundMessage(dm(fake), "a", reply_to=in_dm))
    guild_reply, dm_reply = fake.sent
    assert guild_reply["message_reference"]["message_id"] == asked
    assert "message_reference" not in dm_reply


async def test_a_short_429_is_waited_out_and_posted_once(fake: FakeDiscord) -> None:
    async with running_adapter(fake) as (adapter, _):
        fake.fail_next(SEND_MESSAGE, 429, retry_after=0.3)
        sent_id = await adapter.send(OutboundMessage(dm(fake), "once"))
    assert fake.texts_to(fake.dm_channel_id) == ["once"]
    assert fake.sent[0]["id"] == sent_id


async def test_a_long_429_is_a_send_error_with_discords_retry_after(fake: FakeDiscord) -> None:
    async with running_adapter(fake) as (adapter, _):
        fake.fail_next(SEND_MESSAGE, 429, retry_after=42.5)
        with pytest.raises(SendError) as failed:
            await adapter.send(OutboundMessage(dm(fake), "later"))
        await adapter.send(OutboundMessage(dm(fake), "later"))  # the core's retry
    assert failed.value.retry_after == 42.5
    assert not failed.value.permanent
    assert fake.texts_to(fake.dm_channel_id) == ["later"]


async def test_a_5xx_is_retried_or_a_send_error_that_is_not_permanent(fake: FakeDiscord) -> None:
    async with running_adapter(fake) as (adapter, _):
        fake.fail_next(SEND_MESSAGE, 500)  # discord.py tries again by itself
        await adapter.send(OutboundMessage(dm(fake), "through a 500"))
        fake.fail_next(SEND_MESSAGE, 503)  # one it does not: the core retries
        with pytest.raises(SendError) as failed:
            await adapter.send(OutboundMessage(dm(fake), "through a 503"))
        await adapter.send(OutboundMessage(dm(fake), "through a 503"))
    assert not failed.value.permanent and failed.value.retry_after is None
    assert fake.texts_to(fake.dm_channel_id) == ["through a 500", "through a 503"]


@pytest.mark.parametrize("status", [403, 404])
async def test_forbidden_or_unknown_channel_is_permanent(fake: FakeDiscord, status: int) -> None:
    async with running_adapter(fake) as (adapter, _):
        fake.fail_next(SEND_MESSAGE, status)
        with pytest.raises(SendError) as failed:
            await adapter.send(OutboundMessage(dm(fake), "nobody hears"))
    assert failed.value.permanent
    assert fake.sent == []


def test_the_plugin_takes_discord_snowflakes_only() -> None:
    assert plugin.chat_problem("123456789012345678") is None
    assert plugin.chat_problem("C0123ABCD") is not None
    assert plugin.chat_problem("12345") is not None
    assert plugin.max_message_length == 2000
