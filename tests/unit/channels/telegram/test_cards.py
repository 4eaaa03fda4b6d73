"""Approval cards on Telegram, through python-telegram-bot against the fake Bot API: an inline
keyboard under the card, a tap arriving as a callback query, answered with
answerCallbackQuery, and the card edited to show the decision without its buttons."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from clawpen.channels.telegram.adapter import TelegramAdapter, TelegramSettings
from clawpen.models import (
    Address,
    Button,
    CardTap,
    Decision,
    InboundMessage,
    OutboundMessage,
    TapOutcome,
)
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

BUTTONS = (Button("Allow", "ok-7f3k9q2m"), Button("Deny", "no-7f3k9q2m"))


class Core:
    """The core's side as the adapter sees it: messages accepted, taps decided by a rule."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.taps: list[CardTap] = []

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.messages.append(message)
        return None

    async def tap(self, tap: CardTap) -> TapOutcome:
        self.taps.append(tap)
        if tap.sender_id != "1001":
            return TapOutcome("Not yours to decide.", "")
        return TapOutcome("Allowed.", f"Allowed by user{tap.sender_id}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def adapter_running(fake: FakeTelegram, core: Core) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(
        TelegramSettings(token=fake.token, api_base_url=fake.url, poll_timeout=1)
    )
    task = asyncio.create_task(adapter.run(core))
    try:
        await until(lambda: "getUpdates" in fake.calls, what="the adapter polling")
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_card_gets_an_inline_keyboard_and_a_tap_is_answered_and_shown(
    fake: FakeTelegram,
) -> None:
    core = Core()
    async with adapter_running(fake, core) as adapter:
        card_id = await adapter.send(
            OutboundMessage(
                Address("telegram", "1001"), "assistant wants to fetch x", buttons=BUTTONS
            )
        )
        sent = fake.card(1001, int(card_id))
        keyboard = sent["reply_markup"]["inline_keyboard"]
        assert [[b["text"], b["callback_data"]] for row in keyboard for b in row] == [
            ["Allow", "ok-7f3k9q2m"],
            ["Deny", "no-7f3k9q2m"],
        ]

        query = await fake.push_tap(1001, int(card_id), "ok-7f3k9q2m", user_id=1001)
        answer = await fake.wait_for_answer(query)
        await until(lambda: fake.edits, what="the card edited")

    assert core.taps == [CardTap(Address("telegram", "1001"), "1001", "ok-7f3k9q2m", card_id)]
    assert answer["text"] == "Allowed."
    card = fake.card(1001, int(card_id))
    assert card["text"] == "Allowed by user1001"
    assert "reply_markup" not in card  # no button left to tap
    assert core.messages == []  # a tap is not a message for the agent


async def test_a_tap_by_someone_else_is_answered_and_leaves_the_card(fake: FakeTelegram) -> None:
    core = Core()
    async with adapter_running(fake, core) as adapter:
        card_id = int(
            await adapter.send(
                OutboundMessage(Address("telegram", "-500"), "card", buttons=BUTTONS)
            )
        )
        query = await fake.push_tap(-500, card_id, "ok-7f3k9q2m", user_id=666)
        answer = await fake.wait_for_answer(query)
        # the next update proves the tap was fully handled before it
        await fake.push_text(-500, "after", user_id=1001)
        await until(lambda: core.messages, what="the next message")

    assert core.taps[0].sender_id == "666"  # Telegram's from.id, not the chat
    assert answer["text"] == "Not yours to decide."
    assert fake.edits == []
    assert "reply_markup" in fake.card(-500, card_id)


async def test_edit_replaces_the_text_and_removes_the_buttons(fake: FakeTelegram) -> None:
    core = Core()
    async with adapter_running(fake, core) as adapter:
        card_id = await adapter.send(
            OutboundMessage(Address("telegram", "1001"), "card", buttons=BUTTONS)
        )
        await adapter.edit(Address("telegram", "1001"), card_id, "Expired: nobody decided")
        await adapter.edit(Address("telegram", "1001"), card_id, "Expired: nobody decided")
    card = fake.card(1001, int(card_id))
    assert card["text"] == "Expired: nobody decided"
    assert "reply_markup" not in card


async def test_cards_and_taps_cross_the_adapter_process_boundary(fake: FakeTelegram) -> None:
    """The same through the child process the orchestrator runs: send with buttons, the tap
    frame to the core and its answer back, and an edit."""
    from clawpen.channels.process import ChannelProcess

    core = Core()
    settings = TelegramSettings(token=fake.token, api_base_url=fake.url, poll_timeout=1)
    process = ChannelProcess("telegram", settings, 4096)
    task = asyncio.create_task(process.run(core))
    try:
        await until(lambda: "getUpdates" in fake.calls, what="the adapter process polling")
        first = await process.send(
            OutboundMessage(Address("telegram", "1001"), "card one", buttons=BUTTONS)
        )
        second = await process.send(
            OutboundMessage(Address("telegram", "1001"), "card two", buttons=BUTTONS)
        )
        query = await fake.push_tap(1001, int(first), "ok-7f3k9q2m", user_id=1001)
        answer = await fake.wait_for_answer(query)
        await until(lambda: fake.edits, what="the first card edited")
        await process.edit(Address("telegram", "1001"), second, "Expired")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    assert core.taps == [CardTap(Address("telegram", "1001"), "1001", "ok-7f3k9q2m", first)]
    assert answer["text"] == "Allowed."
    assert fake.card(1001, int(first))["text"] == "Allowed by user1001"
    assert fake.card(1001, int(second))["text"] == "Expired"
    assert "reply_markup" not in fake.card(1001, int(second))
