"""Approval cards and files back on Discord, through discord.py against the fake Discord: a card
as an action row of buttons, a tap as INTERACTION_CREATE answered within Discord's 3 seconds
(the card updated, or a notice only the tapper sees; deferred when the core is slow), and a
file as an attachment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog

from clawpen.channels.base import SendError
from clawpen.channels.discord import plugin
from clawpen.channels.discord.adapter import DiscordAdapter, DiscordSettings
from clawpen.channels.process import ChannelProcess
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
from tests.fakes.fake_discord import API, SEND_MESSAGE, FakeDiscord, snowflake

BUTTONS = (Button("Allow once", "ok-7f3k9q2m"), Button("Deny", "no-7f3k9q2m"))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
MALLORY = {
    "id": snowflake(),
    "username": "mallory",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": False,
}


class Core:
    """The core's side as the adapter sees it: taps decided by a rule (only ``owner`` may
    decide); ``before_tap`` runs first, a test's way to hold the decision back."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.messages: list[InboundMessage] = []
        self.taps: list[CardTap] = []
        self.before_tap: Any = None
        self.unavailable = False
        self.card_for_others = False

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.messages.append(message)
        return None

    async def tap(self, tap: CardTap) -> TapOutcome:
        if self.before_tap is not None:
            await self.before_tap()
        if self.unavailable:
            raise StoreUnavailable("disk full")
        self.taps.append(tap)
        if tap.sender_id != self.owner:
            return TapOutcome("Not yours to decide.", "")
        return TapOutcome("Allowed.", f"Allowed by <@{tap.sender_id}>")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


def settings_for(fake: FakeDiscord) -> DiscordSettings:
    return DiscordSettings(token=fake.token, api_base_url=fake.api_base_url)


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, core: Core) -> AsyncIterator[DiscordAdapter]:
    adapter = DiscordAdapter(settings_for(fake))
    task = asyncio.create_task(adapter.run(core))
    try:
        await fake.wait_connected()
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_card_has_buttons_and_the_owners_tap_updates_it_within_the_response(
    fake: FakeDiscord,
) -> None:
    core = Core(owner=fake.user["id"])
    async with running(fake, core) as adapter:
        card_id = await adapter.send(
            OutboundMessage(Address("discord", fake.channel_id), "fetch x?", buttons=BUTTONS)
        )
        [row] = fake.messages[card_id]["components"]
        assert [(b["label"], b["custom_id"], b["type"]) for b in row["components"]] == [
            ("Allow once", "ok-7f3k9q2m", 2),
            ("Deny", "no-7f3k9q2m", 2),
        ]
        tap = await fake.push_tap(fake.channel_id, card_id, "ok-7f3k9q2m")
        await fake.wait_for(lambda: tap.responses)

    assert core.taps == [
        CardTap(Address("discord", fake.channel_id), fake.user["id"], "ok-7f3k9q2m", card_id)
    ]
    [response] = tap.responses
    assert response["type"] == 7  # UPDATE_MESSAGE: the card itself, no new message
    assert response["data"]["content"] == f"Allowed by <@{fake.user['id']}>"
    assert fake.messages[card_id]["components"] == []  # no button left to tap
    assert fake.messages[card_id]["content"] == f"Allowed by <@{fake.user['id']}>"
    assert tap.late == [] and core.messages == []


async def test_a_tap_by_someone_else_is_told_to_them_alone_and_leaves_the_card(
    fake: FakeDiscord,
) -> None:
    core = Core(owner=fake.user["id"])
    async with running(fake, core) as adapter:
        card_id = await adapter.send(
            OutboundMessage(Address("discord", fake.dm_channel_id), "card", buttons=BUTTONS)
        )
        tap = await fake.push_tap(fake.dm_channel_id, card_id, "no-7f3k9q2m", user=MALLORY)
        await fake.wait_for(lambda: tap.responses)
    assert core.taps[0].sender_id == MALLORY["id"]  # the DM's user.id: Discord's word
    [response] = tap.responses
    assert response["type"] == 4 and response["data"]["flags"] == 64  # ephemeral
    assert response["data"]["content"] == "Not yours to decide."
    assert len(fake.messages[card_id]["components"]) == 1


@pytest.mark.parametrize("owner", [True, False])
async def test_a_slow_decision_is_deferred_in_time_and_shown_afterwards(
    fake: FakeDiscord, owner: bool
) -> None:
    core = Core(owner=fake.user["id"] if owner else "0")
    async with running(fake, core) as adapter:
        adapter.defer_after = 0.2
        card_id = await adapter.send(
            OutboundMessage(Address("discord", fake.channel_id), "card", buttons=BUTTONS)
        )

        async def decide_after_the_deferral() -> None:
            await fake.wait_for(lambda: tap.responses, timeout=10)

        core.before_tap = decide_after_the_deferral
        tap = await fake.push_tap(fake.channel_id, card_id, "ok-7f3k9q2m")
        if owner:
            await fake.wait_for(lambda: fake.edits)
        else:
            await fake.wait_for(lambda: tap.follow_ups)
    assert [r["type"] for r in tap.responses] == [6]  # DEFERRED_UPDATE_MESSAGE, once
    if owner:
        assert fake.messages[card_id]["content"] == f"Allowed by <@{fake.user['id']}>"
        assert fake.messages[card_id]["components"] == []
    else:
        assert tap.follow_ups == [
            {"content": "Not yours to decide.", "flags": 64, "allowed_mentions": {"parse": []}}
        ]
        assert fake.messages[card_id]["content"] == "card"


async def test_a_tap_the_store_could_not_record_asks_to_tap_again(fake: FakeDiscord) -> None:
    core = Core(owner=fake.user["id"])
    core.unavailable = True
    async with running(fake, core) as adapter:
        card_id = await adapter.send(
            OutboundMessage(Address("discord", fake.channel_id), "card", buttons=BUTTONS)
        )
        tap = await fake.push_tap(fake.channel_id, card_id, "ok-7f3k9q2m")
        await fake.wait_for(lambda: tap.responses)
    assert "tap again" in tap.responses[0]["data"]["content"]
    assert len(fake.messages[card_id]["components"]) == 1


async def test_hostile_interactions_are_dropped_with_a_log_line_and_the_adapter_lives(
    fake: FakeDiscord,
) -> None:
    core = Core(owner=fake.user["id"])
    good = {
        "id": snowflake(),
        "type": 3,
        "token": "t",
        "channel_id": fake.dm_channel_id,
        "data": {"custom_id": "ok-1", "component_type": 2},
        "user": fake.user,
        "message": {"id": snowflake()},
    }
    hostile: list[Any] = [
        "a string",
        {"type": "3"},
        {**good, "data": None},
        {**good, "data": {"custom_id": 5, "component_type": 2}},
        {**good, "data": {"custom_id": "x" * 100, "component_type": 2}},  # over 64 bytes
        {key: value for key, value in good.items() if key != "user"},  # from nobody
        {**good, "user": {"id": "../../etc"}},
        {**good, "message": {"id": None}},
        {**good, "channel_id": "general"},
    ]
    with structlog.testing.capture_logs() as logs:
        async with running(fake, core) as adapter:
            for payload in hostile:
                await fake.push_interaction(payload)
            await fake.push_interaction({**good, "type": 2})  # a command: not a tap, not logged
            card_id = await adapter.send(
                OutboundMessage(Address("discord", fake.dm_channel_id), "card", buttons=BUTTONS)
            )
            tap = await fake.push_tap(fake.dm_channel_id, card_id, "ok-7f3k9q2m")
            await fake.wait_for(lambda: tap.responses)
    assert [t.data for t in core.taps] == ["ok-7f3k9q2m"]
    dropped = [entry for entry in logs if entry["event"] == "channel_bad_tap"]
    assert len(dropped) == len(hostile) and all(entry["error"] for entry in dropped)
    assert fake.identifies == 1  # the gateway connection never broke over them


async def test_edit_replaces_the_text_and_removes_the_buttons(fake: FakeDiscord) -> None:
    core = Core(owner=fake.user["id"])
    to = Address("discord", fake.channel_id)
    async with running(fake, core) as adapter:
        card_id = await adapter.send(OutboundMessage(to, "card", buttons=BUTTONS))
        await adapter.edit(to, card_id, "Expired: nobody decided")
        with pytest.raises(SendError) as gone:
            await adapter.edit(to, snowflake(), "Expired")
    assert fake.messages[card_id]["content"] == "Expired: nobody decided"
    assert fake.messages[card_id]["components"] == []
    assert gone.value.permanent  # Unknown Message: trying again cannot help


async def test_a_photo_and_a_pdf_are_sent_as_attachments(fake: FakeDiscord) -> None:
    core = Core(owner=fake.user["id"])
    to = Address("discord", fake.channel_id)
    async with running(fake, core) as adapter:
        photo_id = await adapter.send_file(
            OutboundFile(to, "chart.png", "image/png", PNG, "a chart")
        )
        pdf_id = await adapter.send_file(OutboundFile(to, "form.pdf", "application/pdf", PDF))
    photo, pdf = fake.messages[photo_id], fake.messages[pdf_id]
    assert photo["content"] == "a chart" and pdf["content"] == ""
    assert [(a["filename"], a["content_type"], a["size"]) for a in photo["attachments"]] == [
        ("chart.png", "image/png", len(PNG))
    ]
    assert [(a["filename"], a["content_type"]) for a in pdf["attachments"]] == [
        ("form.pdf", "application/pdf")
    ]
    assert [(u["name"], u["data"]) for u in fake.uploads] == [("chart.png", PNG), ("form.pdf", PDF)]


async def test_file_failures_are_send_errors_of_the_right_kind(fake: FakeDiscord) -> None:
    core = Core(owner=fake.user["id"])
    to = Address("discord", fake.channel_id)
    pdf = OutboundFile(to, "form.pdf", "application/pdf", PDF)
    async with running(fake, core) as adapter:
        fake.fail_next(SEND_MESSAGE, 429, retry_after=42.0)
        with pytest.raises(SendError) as waited:
            await adapter.send_file(pdf)
        fake.fail_next(SEND_MESSAGE, 403)
        with pytest.raises(SendError) as forbidden:
            await adapter.send_file(pdf)
        big = OutboundFile(
            to, "big.bin", "application/octet-stream", bytes(plugin.max_file_bytes + 1)
        )
        with pytest.raises(SendError) as too_big:
            await adapter.send_file(big)
        calls = len(fake.calls_to(SEND_MESSAGE))
    assert (waited.value.retry_after, waited.value.permanent) == (42.0, False)
    assert forbidden.value.permanent
    assert too_big.value.permanent and "10 MB" in str(too_big.value)
    assert calls == 2 and fake.uploads == []  # the oversize file never left
    assert plugin.max_file_bytes == 10 * 1024 * 1024


async def test_the_fake_refuses_what_discord_refuses(fake: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake.token}"}
    url = f"{fake.url}{API}/channels/{fake.channel_id}/messages"

    def card(label: str, custom_id: str) -> dict[str, Any]:
        button = {"type": 2, "style": 1, "label": label, "custom_id": custom_id}
        return {"content": "c", "components": [{"type": 1, "components": [button]}]}

    async with aiohttp.ClientSession(headers=headers) as http:
        for body in (card("x" * 81, "ok"), card("ok", "x" * 101), card("ok", "")):
            async with http.post(url, json=body) as response:
                assert response.status == 400
                assert (await response.json())["code"] == 50035
        form = aiohttp.FormData()
        form.add_field("payload_json", '{"content": "big"}')
        form.add_field("files[0]", b"\0" * (10 * 1024 * 1024 + 1), filename="big.bin")
        async with http.post(url, data=form) as response:
            assert response.status == 413
    assert fake.sent == []


async def test_cards_taps_and_files_cross_the_adapter_process_boundary(fake: FakeDiscord) -> None:
    """The same through the child process the orchestrator runs: a card with buttons, the tap
    frame to the core and its answer back, an edit, and a file."""
    core = Core(owner=fake.user["id"])
    process = ChannelProcess("discord", settings_for(fake), 2000)
    task = asyncio.create_task(process.run(core))
    to = Address("discord", fake.channel_id)
    try:
        await fake.wait_connected()
        first = await process.send(OutboundMessage(to, "card one", buttons=BUTTONS))
        second = await process.send(OutboundMessage(to, "card two", buttons=BUTTONS))
        tap = await fake.push_tap(fake.channel_id, first, "ok-7f3k9q2m")
        await fake.wait_for(lambda: tap.responses)
        await process.edit(to, second, "Expired")
        file_id = await process.send_file(OutboundFile(to, "form.pdf", "application/pdf", PDF))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    assert core.taps == [CardTap(to, fake.user["id"], "ok-7f3k9q2m", first)]
    assert tap.responses[0]["type"] == 7
    assert fake.messages[first]["content"] == f"Allowed by <@{fake.user['id']}>"
    assert (fake.messages[second]["content"], fake.messages[second]["components"]) == (
        "Expired",
        [],
    )
    assert [(u["message_id"], u["data"]) for u in fake.uploads] == [(file_id, PDF)]


async def test_a_tap_in_a_thread_is_addressed_to_the_thread_of_its_channel(
    fake: FakeDiscord,
) -> None:
    core = Core(owner=fake.user["id"])
    async with running(fake, core) as adapter:
        thread = await fake.create_thread(fake.channel_id)
        to = Address("discord", fake.channel_id, thread)
        card_id = await adapter.send(OutboundMessage(to, "card", buttons=BUTTONS))
        tap = await fake.push_tap(thread, card_id, "ok-7f3k9q2m")
        await fake.wait_for(lambda: tap.responses)
    assert core.taps == [CardTap(to, fake.user["id"], "ok-7f3k9q2m", card_id)]
    assert fake.messages[card_id]["channel_id"] == thread
