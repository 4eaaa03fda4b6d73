"""The Slack adapter against the fake Slack: committed before acknowledged, nothing lost or
doubled, only users' messages become tasks, replies land where the question was."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clawpen.channels.base import MAX_ATTACHMENT_BYTES, ChannelFatal, SendError
from clawpen.channels.slack import SlackAdapter, SlackSettings, plugin
from clawpen.config import load_settings
from clawpen.errors import StoreUnavailable
from clawpen.models import Address, Decision, InboundMessage, OutboundMessage, Route
from tests.fakes.fake_slack import FakeSlack
from tests.waiting import until

DM = "D0123ABCD"
CHANNEL = "C0GENERAL"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(redeliver_after=0.5)
    await fake.start()
    yield fake
    await fake.close()


class Recorder:
    """The core's ``accept``: commits each (chat, ts) once, or fails like a full disk."""

    def __init__(self) -> None:
        self.calls: list[InboundMessage] = []
        self.committed: list[InboundMessage] = []
        self.unavailable = 0  # the next calls that raise StoreUnavailable
        self.delay = 0.0  # seconds the next commit takes
        self.gate: asyncio.Event | None = None  # commits wait for it, when set

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.calls.append(message)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            delay, self.delay = self.delay, 0.0
            await asyncio.sleep(delay)
        if self.unavailable:
            self.unavailable -= 1
            raise StoreUnavailable("disk full")
        key = (message.address.chat, message.platform_id)
        if any((m.address.chat, m.platform_id) == key for m in self.committed):
            return None
        self.committed.append(message)
        return Route("assistant")

    def texts(self) -> list[str]:
        return [m.text for m in self.committed]


def deliveries_of(slack: FakeSlack, ts: str) -> list[dict[str, Any]]:
    """Every time Slack sent the envelope of message ``ts``, retries too."""
    return [d for d in slack.deliveries if d["payload"]["event"].get("ts") == ts]


def adapter_for(slack: FakeSlack, **overrides: Any) -> SlackAdapter:
    settings = {
        "bot_token": slack.bot_token,
        "app_token": slack.app_token,
        "api_base_url": slack.url,
        "ping_interval": 0.5,
        **overrides,
    }
    return SlackAdapter(SlackSettings.model_validate(settings))


@contextlib.asynccontextmanager
async def running(
    slack: FakeSlack, accept: Recorder, **overrides: Any
) -> AsyncIterator[SlackAdapter]:
    adapter = adapter_for(slack, **overrides)
    connections = slack.connections
    task = asyncio.create_task(adapter.run(accept))
    try:
        await slack.wait_for_connections(connections + 1, timeout=10)
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_settings_are_accepted_as_the_issue_writes_them() -> None:
    settings = SlackSettings.model_validate(
        {"bot_token": "xoxb-1", "app_token": "xapp-1", "api_base_url": "https://slack.com/api"}
    )
    assert "xoxb-1" not in repr(settings) and "xapp-1" not in repr(settings)
    assert plugin.chat_problem("D0123ABCD") is None
    assert plugin.chat_problem("C0123ABCD") is None and plugin.chat_problem("G0123ABCD") is None
    assert plugin.chat_problem("U0123ABCD") is not None  # a user, not a conversation
    assert plugin.credentials == ("bot_token", "app_token")


def test_the_issues_configuration_is_accepted_as_written(tmp_path: Path) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "model:\n  name: claude-sonnet-4-5\n  api_key: env:ANTHROPIC_API_KEY\n"
        "agents:\n  - id: assistant\n"
        "channels:\n"
        "  slack:\n"
        "    bot_token: env:SLACK_BOT_TOKEN        # xoxb-..., Web API\n"
        "    app_token: env:SLACK_APP_TOKEN        # xapp-..., Socket Mode\n"
        "    api_base_url: https://slack.com/api\n"
        "pairings:\n"
        "  - channel: slack:D0123ABCD\n"
        "    agent: assistant\n"
    )
    env = {"ANTHROPIC_API_KEY": "k", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}
    slack = load_settings(config, env).channel_settings()["slack"]
    assert isinstance(slack, SlackSettings)
    assert (slack.bot_token, slack.app_token) == ("xoxb-1", "xapp-1")
    assert plugin.limits(slack).per_chat == 1.0


async def test_direct_message_is_accepted_and_acknowledged_after_its_commit(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    accept.gate = asyncio.Event()
    async with running(slack, accept):
        ts = await slack.post_user_message(DM, "hello &lt;there&gt;", user="U0ALICE")
        await until(lambda: accept.calls)
        # the commit is still waiting: Slack has no ack, and so sends the envelope again
        await slack.wait_for(lambda: len(deliveries_of(slack, ts)) == 2)
        assert not slack.acked(ts)
        accept.gate.set()
        await slack.wait_for(lambda: slack.acked(ts))
    (message,) = accept.committed
    assert message.address == Address("slack", DM, "")
    assert (message.sender_id, message.text, message.platform_id) == (
        "U0ALICE",
        "hello <there>",
        ts,
    )
    assert message.addressed and message.received_at == float(ts)


async def test_thread_reply_is_accepted_in_its_thread_and_answered_there(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    async with running(slack, accept) as adapter:
        parent = await slack.post_user_message(CHANNEL, "<@U0BOT> start", channel_type="channel")
        await slack.post_user_message(
            CHANNEL, "<@U0BOT> and in the thread", thread_ts=parent, channel_type="channel"
        )
        await until(lambda: len(accept.committed) == 2)
        top, reply = accept.committed
        sent_top = await adapter.send(OutboundMessage(top.address, "a < b & c"))
        sent_reply = await adapter.send(OutboundMessage(reply.address, "answer"))
    assert top.address == Address("slack", CHANNEL, "")
    assert reply.address == Address("slack", CHANNEL, parent)
    assert slack.posted == [
        {"channel": CHANNEL, "text": "a &lt; b &amp; c", "thread_ts": None, "ts": sent_top},
        {"channel": CHANNEL, "text": "answer", "thread_ts": parent, "ts": sent_reply},
    ]


async def test_channel_message_is_addressed_only_when_it_mentions_the_bot(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    async with running(slack, accept):
        await slack.post_user_message(CHANNEL, "<@U0BOT> what time is it", channel_type="channel")
        await slack.post_user_message(CHANNEL, "just chatting", channel_type="channel")
        await slack.post_user_message("G0PRIVATE", "hey <@U0BOT|clawpen>!", channel_type="group")
        await slack.post_user_message(CHANNEL, "ask <@U0OTHER>", channel_type="channel")
        await until(lambda: len(accept.committed) == 4)
    assert [(m.text, m.addressed) for m in accept.committed] == [
        ("what time is it", True),
        ("just chatting", False),
        ("hey !", True),
        ("ask <@U0OTHER>", False),
    ]


async def test_bot_messages_ours_too_and_edits_and_deletions_are_acknowledged_not_accepted(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    async with running(slack, accept) as adapter:
        first = await slack.post_user_message(DM, "first")
        await until(lambda: len(accept.committed) == 1)
        await adapter.send(OutboundMessage(Address("slack", DM), "our own reply"))  # echoed back
        await slack.post_bot_message(CHANNEL, "another app speaking")
        await slack.post_bot_message(DM, "ours, as a bot_message", bot_id=slack.bot_id)
        await slack.edit_message(DM, first, "first, edited")
        await slack.delete_message(DM, first)
        await slack.push_event(
            {
                "type": "message",
                "subtype": "channel_join",
                "channel": CHANNEL,
                "user": "U0NEW",
                "text": "<@U0NEW> has joined",
                "ts": "9.1",
            }
        )
        last = await slack.post_user_message(DM, "last")
        await until(lambda: len(accept.committed) == 2)
        await slack.wait_for(lambda: not slack.pending)  # every envelope acknowledged
    assert accept.texts() == ["first", "last"]
    assert [m.platform_id for m in accept.calls] == [first, last]


async def test_redelivered_envelope_is_accepted_once_and_acknowledged(slack: FakeSlack) -> None:
    accept = Recorder()
    accept.delay = 1.2  # slower than Slack's patience: it delivers the envelope again
    async with running(slack, accept):
        ts = await slack.post_user_message(DM, "only once")
        await slack.wait_for(lambda: slack.acked(ts) and not slack.pending)
    retries = [d["retry_attempt"] for d in slack.deliveries if d["payload"]["event"]["ts"] == ts]
    assert retries[:2] == [0, 1]
    assert len(accept.calls) >= 2 and accept.texts() == ["only once"]


async def test_store_unavailable_leaves_the_envelope_unacknowledged_until_it_commits(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    accept.unavailable = 2  # the disk is full for the first two deliveries
    async with running(slack, accept):
        ts = await slack.post_user_message(DM, "keep me")
        await until(lambda: len(accept.calls) == 1)
        # refused, so not acknowledged: Slack sends it again
        await slack.wait_for(lambda: len(deliveries_of(slack, ts)) == 2)
        assert not slack.acked(ts)
        await slack.wait_for(lambda: slack.acked(ts))
    attempts = [d["retry_attempt"] for d in slack.deliveries if d["payload"]["event"]["ts"] == ts]
    assert attempts == [0, 1, 2]
    assert accept.texts() == ["keep me"]


async def test_dropped_connection_reconnects_and_loses_or_doubles_nothing(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    async with running(slack, accept):
        for i in range(5):
            await slack.post_user_message(DM, f"before {i}")
        await slack.drop()  # mid-burst: some acknowledged, some not
        for i in range(5):
            await slack.post_user_message(DM, f"after {i}")
        await slack.wait_for_connections(2)
        await slack.send_disconnect()  # and Slack's own request to move
        await slack.post_user_message(DM, "moved")
        await slack.wait_for_connections(3)
        await slack.wait_for(lambda: not slack.pending, timeout=20)
    expected = [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)] + ["moved"]
    assert sorted(accept.texts()) == sorted(expected)


async def test_429_5xx_and_refusals_surface_as_send_errors(slack: FakeSlack) -> None:
    adapter = adapter_for(slack)
    address = Address("slack", DM)
    slack.fail_next("chat.postMessage", 429, retry_after=7)
    slack.fail_next("chat.postMessage", 502)
    slack.fail_next("chat.postMessage", 200, error="channel_not_found")
    slack.fail_next("chat.postMessage", 200, error="internal_error")
    errors = []
    for _ in range(4):
        with pytest.raises(SendError) as failed:
            await adapter.send(OutboundMessage(address, "hi"))
        errors.append((failed.value.retry_after, failed.value.permanent))
    ts = await adapter.send(OutboundMessage(address, "hi"))
    assert errors == [(7.0, False), (None, False), (None, True), (None, False)]
    assert slack.posted == [{"channel": DM, "text": "hi", "thread_ts": None, "ts": ts}]


async def test_unreachable_slack_is_a_send_error_to_retry() -> None:
    adapter = SlackAdapter(
        SlackSettings(bot_token="xoxb-1", app_token="xapp-1", api_base_url="http://127.0.0.1:9/api")
    )
    with pytest.raises(SendError) as failed:
        await adapter.send(OutboundMessage(Address("slack", DM), "hi"))
    assert not failed.value.permanent


@pytest.mark.parametrize("key", ["bot_token", "app_token"])
async def test_refused_token_is_fatal_with_one_line_naming_its_key(
    slack: FakeSlack, key: str
) -> None:
    adapter = adapter_for(slack, **{key: "xoxb-revoked"})
    with pytest.raises(ChannelFatal) as fatal:
        await asyncio.wait_for(adapter.run(Recorder()), timeout=10)
    assert str(fatal.value) == (
        f"slack: the {key.replace('_', ' ')} was refused (invalid_auth); check channels.slack.{key}"
    )


async def test_attachments_are_downloaded_and_those_too_large_named(slack: FakeSlack) -> None:
    accept = Recorder()
    small = slack.add_file("notes.txt", b"the notes", "text/plain")
    announced_large = {**slack.add_file("movie.mp4", b"x", "video/mp4"), "size": 30 * 2**20}
    lying = slack.add_file("big.bin", b"\0" * (MAX_ATTACHMENT_BYTES + 1), "application/x-bin")
    lying["size"] = 10  # says small, streams large: the cap holds while reading
    foreign = {**slack.add_file("x.txt", b"x"), "url_private_download": "http://10.0.0.1/x"}
    async with running(slack, accept):
        await slack.post_user_message(DM, "see files", files=[small, announced_large, lying])
        await slack.post_user_message(DM, "", files=[foreign])
        await until(lambda: len(accept.committed) == 2)  # in order: the downloads wait their turn
    with_files, elsewhere = accept.committed
    assert [(a.name, a.media_type, a.data) for a in with_files.attachments] == [
        ("notes.txt", "text/plain", b"the notes")
    ]
    assert with_files.text.splitlines() == [
        "see files",
        "[movie.mp4: not downloaded, 30.0 MB is over the 20 MB limit]",
        "[big.bin: not downloaded, over the 20 MB limit]",
    ]
    assert elsewhere.attachments == ()
    assert elsewhere.text == "[x.txt: not downloaded, its address is not Slack's]"
    assert small["id"] in slack.downloads and foreign["id"] not in slack.downloads


async def test_typing_is_a_reaction_added_once_and_removed_at_the_end(slack: FakeSlack) -> None:
    adapter = adapter_for(slack)
    address = Address("slack", DM)
    for _ in range(3):  # called again every few seconds while the agent works
        await adapter.typing(address, "1.000001", True)
    assert slack.reactions[(DM, "1.000001")] == {"eyes"}
    await adapter.typing(address, "1.000001", False)
    await adapter.typing(address, "1.000002", False)  # never shown: nothing to take away
    assert slack.reactions[(DM, "1.000001")] == set()
    assert slack.reaction_calls == [
        ("add", DM, "1.000001", "eyes"),
        ("remove", DM, "1.000001", "eyes"),
    ]
    slack.fail_next("reactions.add", 500)
    await adapter.typing(address, "1.000003", True)  # best effort: it never raises


async def test_hostile_events_are_logged_and_acknowledged_and_the_adapter_lives(
    slack: FakeSlack,
) -> None:
    accept = Recorder()
    async with running(slack, accept):
        await slack.push_event({"type": "message", "text": "no channel, no ts"})
        await slack.push_event({"type": "message", "channel": ["C1"], "ts": 5, "user": "U1"})
        await slack.push_event({"type": "message", "channel": "C1", "ts": "not-a-number"})
        await slack.push_event(
            {"type": "message", "channel": DM, "ts": "7.1", "text": "odd", "files": 5}
        )
        await slack.push_event(
            {"type": "message", "channel": DM, "ts": "7.2", "text": "x", "files": [{"size": "a"}]}
        )
        await slack.send_raw("this is not JSON")
        await slack.send_raw('{"type": "events_api", "envelope_id": "e1", "payload": "text"}')
        ts = await slack.post_user_message(DM, "still here")
        await until(lambda: len(accept.texts()) == 3)
        await slack.wait_for(lambda: not slack.pending)
    assert slack.acked(ts)
    assert accept.texts() == [
        "odd",
        "x\n[file: not downloaded, its address is not Slack's]",
        "still here",
    ]
