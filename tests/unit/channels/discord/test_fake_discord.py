"""The fake Discord, driven by discord.py exactly as the channel drives it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest

from clawpen.channels.discord.client import Bot
from tests.fakes.fake_discord import SEND_MESSAGE, FakeDiscord
from tests.waiting import until


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


class Heard:
    """A connected client and the messages it heard, in order."""

    def __init__(self) -> None:
        self.messages: list[discord.Message] = []

    def __call__(self, message: discord.Message) -> None:
        self.messages.append(message)

    async def until(self, count: int) -> list[discord.Message]:
        await until(lambda: len(self.messages) >= count, timeout=30, what=f"{count} heard")
        return self.messages


@contextlib.asynccontextmanager
async def connected(fake: FakeDiscord, heard: Heard) -> AsyncIterator[Bot]:
    client = Bot(fake.api_base_url, heard)
    await client.login(fake.token)
    await client.point_gateway()
    task = asyncio.create_task(client.connect())
    try:
        await fake.wait_connected()
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def test_login_returns_the_bot_and_a_wrong_token_is_refused(fake: FakeDiscord) -> None:
    client = Bot(fake.api_base_url, Heard())
    await client.login(fake.token)
    assert client.user is not None
    assert str(client.user.id) == fake.bot["id"]
    assert fake.calls[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    await client.close()

    refused = Bot(fake.api_base_url, Heard())
    with pytest.raises(discord.LoginFailure):
        await refused.login("not-the-token")
    await refused.close()


async def test_the_client_connects_where_gateway_bot_says_and_sees_the_guild(
    fake: FakeDiscord,
) -> None:
    async with connected(fake, Heard()) as client:
        guild = client.get_guild(int(fake.guild_id))
        assert guild is not None
        channel = client.get_channel(int(fake.channel_id))
        assert isinstance(channel, discord.TextChannel)
        assert channel.guild == guild
    assert fake.gateway_paths == ["/gateway"]
    assert fake.identifies == 1


async def test_messages_arrive_in_order_from_dms_and_guild_channels(fake: FakeDiscord) -> None:
    heard = Heard()
    async with connected(fake, heard) as client:
        dm = await fake.post_user_message(fake.dm_channel_id, "in a dm", guild=False)
        mention = await fake.post_user_message(fake.channel_id, "hey", mentions_bot=True)
        messages = await heard.until(2)
        assert client.user is not None
        me = client.user.id
    assert [str(m.id) for m in messages] == [dm, mention]
    assert messages[0].guild is None
    assert messages[1].guild is not None
    assert messages[1].raw_mentions == [me]
    assert messages[1].content == f"<@{me}> hey"


async def test_a_post_is_recorded_with_its_reference_and_echoed_on_the_gateway(
    fake: FakeDiscord,
) -> None:
    heard = Heard()
    async with connected(fake, heard) as client:
        question = await fake.post_user_message(fake.channel_id, "q", mentions_bot=True)
        await heard.until(1)
        channel = client.get_partial_messageable(int(fake.channel_id))
        reference = discord.MessageReference(
            message_id=int(question), channel_id=int(fake.channel_id)
        )
        sent = await channel.send("an answer", reference=reference)
        echoed = await heard.until(2)
    assert fake.texts_to(fake.channel_id) == ["an answer"]
    assert fake.sent[0]["message_reference"]["message_id"] == question
    assert echoed[1].id == sent.id
    assert echoed[1].author.bot


async def test_every_answer_carries_rate_limit_headers(fake: FakeDiscord) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{fake.api_base_url}/v10/users/@me", headers={"Authorization": f"Bot {fake.token}"}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        for header in ("X-RateLimit-Bucket", "X-RateLimit-Remaining", "X-RateLimit-Reset-After"):
            assert header in response.headers


async def test_a_429_is_waited_out_by_discord_py_and_posts_once(fake: FakeDiscord) -> None:
    async with connected(fake, Heard()) as client:
        fake.fail_next(SEND_MESSAGE, 429, retry_after=0.2)
        channel = client.get_partial_messageable(int(fake.channel_id))
        await channel.send("after the wait")
    posts = [c for c in fake.calls if c.startswith("POST /channels")]
    assert len(posts) == 2  # refused once, then accepted
    assert fake.texts_to(fake.channel_id) == ["after the wait"]


async def test_a_long_429_is_raised_with_its_retry_after(fake: FakeDiscord) -> None:
    async with connected(fake, Heard()) as client:
        fake.fail_next(SEND_MESSAGE, 429, retry_after=45.0)
        channel = client.get_partial_messageable(int(fake.channel_id))
        with pytest.raises(discord.RateLimited) as raised:
            await channel.send("later")
    assert raised.value.retry_after == 45.0
    assert fake.sent == []


async def test_a_500_is_retried_by_discord_py_and_posts_once(fake: FakeDiscord) -> None:
    async with connected(fake, Heard()) as client:
        fake.fail_next(SEND_MESSAGE, 500)
        await client.get_partial_messageable(int(fake.channel_id)).send("despite a 500")
    assert fake.texts_to(fake.channel_id) == ["despite a 500"]


async def test_a_dropped_connection_resumes_and_replays_what_was_missed(
    fake: FakeDiscord,
) -> None:
    heard = Heard()
    async with connected(fake, heard):
        await fake.post_user_message(fake.dm_channel_id, "before", guild=False)
        await heard.until(1)
        await fake.drop_connection()
        await fake.post_user_message(fake.dm_channel_id, "while down", guild=False)
        await fake.post_user_message(fake.dm_channel_id, "also while down", guild=False)
        messages = await heard.until(3)
        await fake.wait_for(lambda: fake.resumes == 1)
    assert [m.content for m in messages] == ["before", "while down", "also while down"]
    assert fake.identifies == 1  # resumed, not a new session
    assert fake.gateway_paths == ["/gateway", "/gateway-resume"]  # READY's resume_gateway_url


async def test_a_session_that_cannot_resume_is_invalidated_and_identifies_again(
    fake: FakeDiscord,
) -> None:
    heard = Heard()
    async with connected(fake, heard):
        fake.invalidate_sessions()
        await fake.drop_connection()
        await fake.wait_for(lambda: fake.identifies == 2)
        await fake.wait_connected()
        await fake.post_user_message(fake.dm_channel_id, "new session", guild=False)
        messages = await heard.until(1)
    assert [m.content for m in messages] == ["new session"]
    assert fake.resumes == 0


async def test_a_missing_privileged_intent_closes_the_gateway_with_4014(
    fake: FakeDiscord,
) -> None:
    fake.privileged_intents = False
    client = Bot(fake.api_base_url, Heard())
    await client.login(fake.token)
    await client.point_gateway()
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with asyncio.timeout(30):
            await client.connect()
    await client.close()


async def test_attachments_are_served_from_the_cdn_url_in_the_message(fake: FakeDiscord) -> None:
    from tests.fakes.fake_discord import FakeFile

    heard = Heard()
    async with connected(fake, heard):
        await fake.post_user_message(
            fake.dm_channel_id,
            "a file",
            guild=False,
            attachments=[FakeFile("notes.txt", "text/plain", b"hello file")],
        )
        (message,) = await heard.until(1)
        data = await message.attachments[0].read()
    assert data == b"hello file"
    assert message.attachments[0].size == len(b"hello file")
    assert len(fake.downloads) == 1


async def test_an_interaction_is_answered_once_within_three_seconds_and_followed_up_after(
    fake: FakeDiscord,
) -> None:
    raw: list[object] = []
    client = Bot(fake.api_base_url, Heard(), raw.append)
    await client.login(fake.token)
    await client.point_gateway()
    task = asyncio.create_task(client.connect())
    try:
        await fake.wait_connected()
        channel = client.get_partial_messageable(int(fake.channel_id))
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Go", custom_id="go"))
        view.stop()
        card = await channel.send("card", view=view)
        assert fake.messages[str(card.id)]["components"][0]["components"][0]["custom_id"] == "go"
        first = await fake.push_tap(fake.channel_id, str(card.id), "go")
        late = await fake.push_tap(fake.channel_id, str(card.id), "go")
        await until(lambda: len(raw) == 2, what="both interactions on the gateway")
        with pytest.raises(discord.NotFound):  # no response yet: no follow-up either
            await client.follow_up(first.token, {"content": "too soon"})
        await client.respond(first.id, first.token, {"type": 6})
        with pytest.raises(discord.HTTPException) as twice:
            await client.respond(first.id, first.token, {"type": 6})
        await client.follow_up(first.token, {"content": "later", "flags": 64})
        late.created -= 4.0  # as if Discord's 3 seconds had passed
        with pytest.raises(discord.NotFound):
            await client.respond(late.id, late.token, {"type": 6})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
    assert isinstance(raw[0], dict) and raw[0]["data"] == {"custom_id": "go", "component_type": 2}
    assert raw[0]["member"]["user"]["id"] == fake.user["id"]
    assert twice.value.code == 40060
    assert first.responses == [{"type": 6}] and first.follow_ups[0]["content"] == "later"
    assert late.responses == [] and late.late == [6]
