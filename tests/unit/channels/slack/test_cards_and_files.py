"""Approval cards and files back on Slack, through slack_sdk against the fake Slack: a card as
Block Kit buttons, a tap as ``block_actions`` over Socket Mode (acknowledged before the core is
asked), the card updated with ``chat.update`` or the tapper told with ``chat.postEphemeral``;
a file through the external-upload flow."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from clawpen.channels.base import SendError
from clawpen.channels.process import ChannelProcess
from clawpen.channels.slack import SlackAdapter, SlackSettings, plugin
from clawpen.channels.slack.adapter import card_blocks
from clawpen.errors import StoreUnavailable
from clawpen.models import (
    Address,
    Button,
    CardTap,
    Decision,
    InboundMessage,
    OutboundFile,
    OutboundMessage,
    TapOutcome,
)
from tests.fakes.fake_slack import FakeSlack, blocks_problems

DM = "D0123ABCD"
CHANNEL = "C0GENERAL"
BUTTONS = (Button("Allow once", "ok-7f3k9q2m"), Button("Deny", "no-7f3k9q2m"))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"


class Core:
    """The core's side as the adapter sees it: messages accepted, taps decided by a rule
    (only U0ALICE may decide). ``before_tap`` runs first: a test's way to see what the
    platform had been told before the core was asked."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.taps: list[CardTap] = []
        self.before_tap: Any = None
        self.unavailable = False

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.messages.append(message)
        return None

    async def tap(self, tap: CardTap) -> TapOutcome:
        if self.before_tap is not None:
            await self.before_tap()
        if self.unavailable:
            raise StoreUnavailable("disk full")
        self.taps.append(tap)
        if tap.sender_id != "U0ALICE":
            return TapOutcome("Not yours to decide.", "")
        return TapOutcome("Allowed.", f"Allowed by <@{tap.sender_id}>")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(redeliver_after=0.5)
    await fake.start()
    yield fake
    await fake.close()


def settings_for(slack: FakeSlack) -> SlackSettings:
    return SlackSettings(
        bot_token=slack.bot_token,
        app_token=slack.app_token,
        api_base_url=slack.url,
        ping_interval=0.5,
    )


@contextlib.asynccontextmanager
async def running(slack: FakeSlack, core: Core) -> AsyncIterator[SlackAdapter]:
    adapter = SlackAdapter(settings_for(slack))
    task = asyncio.create_task(adapter.run(core))
    try:
        await slack.wait_for_connections(1, timeout=10)
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_card_has_native_buttons_and_a_tap_is_acked_first_then_the_card_updated(
    slack: FakeSlack,
) -> None:
    core = Core()
    async with running(slack, core) as adapter:
        ts = await adapter.send(
            OutboundMessage(
                Address("slack", DM), "assistant wants to fetch <x> & y", buttons=BUTTONS
            )
        )
        card = slack.message(DM, ts)
        section, actions = card["blocks"]
        assert section["text"] == {
            "type": "mrkdwn",
            "text": "assistant wants to fetch &lt;x&gt; &amp; y",
        }
        assert card["text"] == "assistant wants to fetch &lt;x&gt; &amp; y"  # the fallback
        assert [(e["text"]["text"], e["action_id"], e["value"]) for e in actions["elements"]] == [
            ("Allow once", "ok-7f3k9q2m", "ok-7f3k9q2m"),
            ("Deny", "no-7f3k9q2m", "no-7f3k9q2m"),
        ]

        async def acked_before_asked() -> None:  # deadlocks unless the ack came first
            await slack.wait_for(lambda: envelope.envelope_id in slack.acks, timeout=10)

        core.before_tap = acked_before_asked
        envelope = await slack.push_tap(DM, ts, "ok-7f3k9q2m", user="U0ALICE")
        await slack.wait_for(lambda: slack.updates)

    assert core.taps == [CardTap(Address("slack", DM), "U0ALICE", "ok-7f3k9q2m", ts)]
    assert slack.timeline.index(f"ack:{envelope.envelope_id}") < slack.timeline.index("chat.update")
    updated = slack.message(DM, ts)
    assert updated["text"] == "Allowed by &lt;@U0ALICE&gt;"
    assert "blocks" not in updated  # no button left to tap
    assert slack.ephemerals == []
    assert core.messages == []  # a tap is not a message for the agent


async def test_a_tap_by_someone_else_gets_an_ephemeral_notice_and_leaves_the_card(
    slack: FakeSlack,
) -> None:
    core = Core()
    async with running(slack, core) as adapter:
        ts = await adapter.send(
            OutboundMessage(Address("slack", CHANNEL, "1700000000.000100"), "card", buttons=BUTTONS)
        )
        await slack.push_tap(CHANNEL, ts, "ok-7f3k9q2m", user="U0MALLORY")
        await slack.wait_for(lambda: slack.ephemerals)
    assert core.taps == [
        CardTap(Address("slack", CHANNEL, "1700000000.000100"), "U0MALLORY", "ok-7f3k9q2m", ts)
    ]
    assert slack.ephemerals == [
        {
            "channel": CHANNEL,
            "user": "U0MALLORY",
            "text": "Not yours to decide.",
            "thread_ts": "1700000000.000100",
        }
    ]
    assert slack.updates == []
    assert slack.message(CHANNEL, ts)["blocks"][-1]["type"] == "actions"


async def test_a_tap_the_store_could_not_record_tells_the_tapper_to_tap_again(
    slack: FakeSlack,
) -> None:
    core = Core()
    core.unavailable = True
    async with running(slack, core) as adapter:
        ts = await adapter.send(OutboundMessage(Address("slack", DM), "card", buttons=BUTTONS))
        await slack.push_tap(DM, ts, "ok-7f3k9q2m", user="U0ALICE")
        await slack.wait_for(lambda: slack.ephemerals)
    assert "tap again" in slack.ephemerals[0]["text"]
    assert "blocks" in slack.message(DM, ts)


async def test_edit_replaces_the_text_and_removes_the_buttons(slack: FakeSlack) -> None:
    adapter = SlackAdapter(settings_for(slack))
    ts = await adapter.send(OutboundMessage(Address("slack", DM), "card", buttons=BUTTONS))
    await adapter.edit(Address("slack", DM), ts, "Expired: nobody decided")
    assert slack.message(DM, ts)["text"] == "Expired: nobody decided"
    assert "blocks" not in slack.message(DM, ts)
    with pytest.raises(SendError) as gone:
        await adapter.edit(Address("slack", DM), "1.999999", "Expired")
    assert gone.value.permanent  # message_not_found: trying again cannot help


async def test_hostile_interactive_payloads_are_dropped_with_a_log_line_and_the_adapter_lives(
    slack: FakeSlack,
) -> None:
    core = Core()
    container = {"type": "message", "message_ts": "1.000001", "channel_id": DM}
    button = {"type": "button", "action_id": "ok-1", "value": "ok-1"}
    hostile: list[Any] = [
        {"type": "block_actions"},  # nothing in it
        {"type": "block_actions", "container": container, "actions": [button]},  # nobody
        {"type": "block_actions", "user": {"id": 7}, "container": container, "actions": [button]},
        {"type": "block_actions", "user": {"id": "U1"}, "container": container, "actions": 5},
        {  # button data longer than any card's
            "type": "block_actions",
            "user": {"id": "U1"},
            "container": container,
            "actions": [{**button, "value": "x" * 300}],
        },
        "just a string",
    ]
    with structlog.testing.capture_logs() as logs:
        async with running(slack, core) as adapter:
            for payload in hostile:
                await slack.push_interactive(payload)
            await slack.push_interactive({"type": "view_submission", "view": {}})  # not a tap
            ts = await adapter.send(OutboundMessage(Address("slack", DM), "card", buttons=BUTTONS))
            await slack.push_tap(DM, ts, "no-7f3k9q2m", user="U0ALICE")
            await slack.wait_for(lambda: slack.updates)
            await slack.wait_for(lambda: not slack.pending)  # every envelope acknowledged
    assert [tap.data for tap in core.taps] == ["no-7f3k9q2m"]
    dropped = [entry for entry in logs if entry["event"] == "channel_bad_tap"]
    assert len(dropped) == 5 and all(entry["error"] for entry in dropped)


async def test_a_photo_and_a_pdf_go_through_the_external_upload_flow(slack: FakeSlack) -> None:
    adapter = SlackAdapter(settings_for(slack))
    photo = await adapter.send_file(
        OutboundFile(Address("slack", DM), "chart.png", "image/png", PNG, "the chart")
    )
    document = await adapter.send_file(
        OutboundFile(
            Address("slack", CHANNEL, "1700000000.000100"), "form.pdf", "application/pdf", PDF
        )
    )
    first, second = slack.uploads
    assert (first["id"], first["name"], first["data"], first["length"]) == (
        photo,
        "chart.png",
        PNG,
        len(PNG),
    )
    assert (first["channel"], first["thread_ts"], first["initial_comment"]) == (
        DM,
        None,
        "the chart",
    )
    assert (second["id"], second["name"], second["data"]) == (document, "form.pdf", PDF)
    assert (second["channel"], second["thread_ts"]) == (CHANNEL, "1700000000.000100")
    assert slack.calls.count("files.getUploadURLExternal") == 2
    assert slack.calls.count("files.completeUploadExternal") == 2


async def test_upload_failures_are_send_errors_of_the_right_kind(slack: FakeSlack) -> None:
    adapter = SlackAdapter(settings_for(slack))
    to = Address("slack", DM)
    slack.fail_next("files.getUploadURLExternal", 429, retry_after=9)
    slack.fail_next("upload", 503)
    slack.fail_next("files.completeUploadExternal", 200, error="channel_not_found")
    errors = []
    for _ in range(3):
        with pytest.raises(SendError) as failed:
            await adapter.send_file(OutboundFile(to, "a.pdf", "application/pdf", PDF))
        errors.append((failed.value.retry_after, failed.value.permanent))
    assert errors == [(9.0, False), (None, False), (None, True)]
    assert slack.uploads == []
    await adapter.send_file(OutboundFile(to, "a.pdf", "application/pdf", PDF))  # the retry
    assert [u["data"] for u in slack.uploads] == [PDF]


async def test_a_file_over_the_limit_is_refused_before_a_byte_is_sent(slack: FakeSlack) -> None:
    adapter = SlackAdapter(settings_for(slack))
    big = OutboundFile(Address("slack", DM), "huge.bin", "application/octet-stream", b"")
    big = OutboundFile(big.address, big.name, big.media_type, bytes(plugin.max_file_bytes + 1))
    with pytest.raises(SendError) as refused:
        await adapter.send_file(big)
    assert refused.value.permanent and "100 MB" in str(refused.value)
    assert "files.getUploadURLExternal" not in slack.calls
    assert plugin.max_file_bytes == 100 * 1024 * 1024


def test_card_blocks_pass_slacks_checks_even_for_a_long_card() -> None:
    long = "<&>" * 1500  # 4,500 characters, 13,500 once escaped
    blocks = card_blocks(long, buttons=BUTTONS)
    assert blocks_problems(blocks) == []
    text = "".join(b["text"]["text"] for b in blocks if b["type"] == "section")
    assert text == "&lt;&amp;&gt;" * 1500
    assert blocks_problems([*blocks, {"type": "actions", "elements": blocks[-1]["elements"]}])


async def test_cards_taps_and_files_cross_the_adapter_process_boundary(slack: FakeSlack) -> None:
    """The same through the child process the orchestrator runs: a card with buttons, the tap
    frame to the core and its answer back, an edit, and a file."""
    core = Core()
    process = ChannelProcess("slack", settings_for(slack), 4000)
    task = asyncio.create_task(process.run(core))
    try:
        await slack.wait_for_connections(1, timeout=30)
        to = Address("slack", DM)
        first = await process.send(OutboundMessage(to, "card one", buttons=BUTTONS))
        second = await process.send(OutboundMessage(to, "card two", buttons=BUTTONS))
        await slack.push_tap(DM, first, "ok-7f3k9q2m", user="U0ALICE")
        await slack.wait_for(lambda: slack.updates)
        await process.edit(to, second, "Expired")
        file_id = await process.send_file(OutboundFile(to, "form.pdf", "application/pdf", PDF))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    assert core.taps == [CardTap(Address("slack", DM), "U0ALICE", "ok-7f3k9q2m", first)]
    assert slack.message(DM, first)["text"] == "Allowed by &lt;@U0ALICE&gt;"
    assert slack.message(DM, second)["text"] == "Expired"
    assert "blocks" not in slack.message(DM, second)
    assert [(u["id"], u["data"]) for u in slack.uploads] == [(file_id, PDF)]


async def test_the_fake_refuses_what_slack_refuses_in_blocks(slack: FakeSlack) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=slack.bot_token, base_url=slack.url)
    button = {"type": "button", "text": {"type": "plain_text", "text": "x" * 76}, "action_id": "a"}
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(
            channel=DM, text="t", blocks=[{"type": "actions", "elements": [button]}]
        )
    assert refused.value.response["error"] == "invalid_blocks"
    twice = {**button, "text": {"type": "plain_text", "text": "ok"}}
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(
            channel=DM, text="t", blocks=[{"type": "actions", "elements": [twice, twice]}]
        )
    assert slack.posted == []
