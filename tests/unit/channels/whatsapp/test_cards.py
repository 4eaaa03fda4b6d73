"""Approval cards on WhatsApp, through the adapter's webhook (aiohttp, signed as Meta signs)
and the fake Cloud API, which refuses what Meta refuses: a card as an ``interactive`` message
with reply buttons, a tap arriving as a ``button_reply``, decided by the core and answered with
a text reply (WhatsApp cannot edit), the webhook answered 200 only once the core recorded it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from clawpen.channels.whatsapp import WhatsAppAdapter, WhatsAppSettings
from clawpen.channels.whatsapp.cards import card_messages, title
from clawpen.models import Address, Button, CardTap, OutboundFile, OutboundMessage
from tests.fakes.fake_whatsapp import FakeWhatsApp
from tests.waiting import until

from .support import Core, running_adapter

ALICE = "15551234567"
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
MALLORY = "15559876543"
EGRESS = (
    Button("Allow once", "ok-7f3k9q2m"),
    Button("Allow this host from now on", "al-7f3k9q2m"),
    Button("Deny", "no-7f3k9q2m"),
)
CARD = "Approval needed: assistant wants to reach example.com:443\nUnanswered by 21:00 UTC: denied."


@pytest.fixture
async def meta() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def core() -> Core:
    return Core()


@pytest.fixture
async def adapter(meta: FakeWhatsApp, core: Core) -> AsyncIterator[WhatsAppAdapter]:
    async with running_adapter(meta, core) as running:
        yield running


def card(text: str = CARD, buttons: tuple[Button, ...] = EGRESS) -> OutboundMessage:
    return OutboundMessage(Address("whatsapp", ALICE), text, buttons=buttons)


async def test_a_card_goes_out_as_reply_buttons_within_the_cloud_apis_limits(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    [sent] = meta.sent  # the fake refuses (400) what Meta would: it was taken
    assert (sent["type"], sent["id"]) == ("interactive", card_id)
    interactive = sent["interactive"]
    assert interactive["type"] == "button"
    assert [(b["reply"]["id"], b["reply"]["title"]) for b in interactive["action"]["buttons"]] == [
        ("ok-7f3k9q2m", "Allow once"),
        ("al-7f3k9q2m", "Allow always"),
        ("no-7f3k9q2m", "Deny"),
    ]
    # the shortened label is spelled out whole in the card's text
    assert interactive["body"]["text"] == CARD + "\n\nAllow always: Allow this host from now on"


async def test_a_card_longer_than_a_body_sends_its_text_first_then_the_buttons(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    long_card = "Approval needed: assistant wants to send\n" + "a line of the message\n" * 60
    card_id = await adapter.send(card(long_card, EGRESS[::2]))
    text, buttons = meta.sent
    assert (text["type"], text["text"]["body"]) == ("text", long_card.strip())
    assert buttons["type"] == "interactive" and buttons["id"] == card_id  # taps name this one
    assert buttons["interactive"]["body"]["text"] == "Choose one:"


def test_labels_are_shortened_sensibly_and_kept_unique() -> None:
    assert title("Allow this host from now on") == "Allow always"
    assert title("Allow just this one time once") == "Allow once"
    assert title("Send the report to everyone") == "Send the report to…"
    assert len(title("x" * 64)) == 20
    many = tuple(Button(f"Allow this host from now on {i}", f"d{i}") for i in range(2))
    [body] = card_messages(card("c", many))
    titles = [b["reply"]["title"] for b in body["interactive"]["action"]["buttons"]]
    assert len(set(titles)) == 2 and all(len(t) <= 20 for t in titles)


def test_more_buttons_than_whatsapp_shows_fall_back_to_reply_codes() -> None:
    four = tuple(Button(f"Option {i}", f"op-{i}") for i in range(4))
    [body] = card_messages(card("Pick one", four))
    assert body["type"] == "text"
    assert "To Option 3, reply with: op-3" in body["text"]["body"]


async def test_a_tap_reaches_the_core_as_the_tappers_and_the_decision_is_sent_back(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    tap = meta.user_taps(ALICE, card_id, "al-7f3k9q2m", "Allow always")
    assert await meta.wait_for_delivery(tap) == [200]
    assert core.taps == [CardTap(Address("whatsapp", ALICE), ALICE, "al-7f3k9q2m", card_id)]
    assert core.messages == []  # a tap is not a message for the agent
    await meta.wait_for_sent(2)
    answer = meta.sent[1]
    assert (answer["type"], answer["text"]["body"]) == ("text", f"Allowed by {ALICE}.")
    assert answer["context"] == {"message_id": card_id}  # under the card it decides


async def test_a_tap_by_someone_else_is_theirs_and_told_not_yours(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    # Mallory's own tap: whatever the card says, who tapped is Meta's "from"
    await meta.wait_for_delivery(meta.user_taps(MALLORY, card_id, "ok-7f3k9q2m"))
    assert [t.sender_id for t in core.taps] == [MALLORY]
    await meta.wait_for_sent(2)
    assert meta.texts_to(MALLORY) == ["Not yours to decide."]


async def test_a_forged_or_unsigned_tap_is_refused_401_and_changes_nothing(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    body = meta.tap_body(ALICE, card_id, "ok-7f3k9q2m")
    assert (await meta.post(body))[0] == 401
    assert (await meta.post(body, {"X-Hub-Signature-256": "sha256=" + "0" * 64}))[0] == 401
    other = meta.tap_body(ALICE, card_id, "no-7f3k9q2m")
    assert (await meta.post(body, {"X-Hub-Signature-256": meta.sign(other)}))[0] == 401
    assert core.offered == [] and core.taps == []
    assert len(meta.sent) == 1  # the card only: nothing was answered


async def test_a_tap_the_core_could_not_record_gets_503_and_comes_again(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    core.unavailable = 1
    tap = meta.user_taps(ALICE, card_id, "ok-7f3k9q2m")
    assert await meta.wait_for_delivery(tap) == [503, 200]
    assert [t.data for t in core.taps] == ["ok-7f3k9q2m"]
    await meta.wait_for_sent(2)
    assert [m["text"]["body"] for m in meta.sent[1:]] == [f"Allowed by {ALICE}."]


async def test_a_redelivered_tap_is_neither_decided_nor_answered_twice(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    tap = meta.user_taps(ALICE, card_id, "ok-7f3k9q2m")
    await meta.wait_for_delivery(tap)
    await meta.wait_for_sent(2)
    meta.redeliver(tap)  # Meta does, now and then, although it was answered 200
    assert await meta.wait_for_attempts(tap, 2) == [200, 200]
    meta.user_says(ALICE, "and then?")  # handled after the copy: proves the copy was done
    await core.wait_for(1)
    assert len(core.taps) == 1
    assert len(meta.sent) == 2


async def test_a_tap_the_core_answers_is_answered_even_when_the_reply_fails(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    meta.fail_next(400, code=131051)  # the answer is refused: the tap still counted, once
    tap = meta.user_taps(ALICE, card_id, "ok-7f3k9q2m")
    assert await meta.wait_for_delivery(tap) == [200]
    await meta.wait_for_send_attempts(2)
    assert len(core.taps) == 1 and len(meta.sent) == 1


async def test_edit_sends_the_new_text_as_a_reply_to_the_card(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    card_id = await adapter.send(card())
    await adapter.edit(Address("whatsapp", ALICE), card_id, "Expired: nobody decided in time.")
    edited = meta.sent[1]
    assert edited["text"]["body"] == "Expired: nobody decided in time."
    assert edited["context"] == {"message_id": card_id}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_cards_and_taps_cross_the_adapter_process_boundary(meta: FakeWhatsApp) -> None:
    """The same through the child process the orchestrator runs (and a file): the card with
    buttons, a signed tap to the adapter's webhook there, the tap frame to the core and its
    answer back as a text reply; the webhook answered only after that (503 while the store
    could not record it, so Meta delivers it again)."""
    from clawpen.channels.process import ChannelProcess

    core = Core()
    port = free_port()
    meta.webhook_url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    settings = WhatsAppSettings.model_validate(meta.settings(listen=f"127.0.0.1:{port}"))
    process = ChannelProcess("whatsapp", settings, 4096)
    task = asyncio.create_task(process.run(core))
    try:

        async def answers() -> bool:
            with contextlib.suppress(OSError):
                return (await meta.handshake(meta.verify_token, "ready"))[0] == 200
            return False

        async with asyncio.timeout(30):
            while not await answers():
                await asyncio.sleep(0.05)
        card_id = await process.send(card())
        core.unavailable = 1  # the first delivery finds the store unwritable
        tap = meta.user_taps(ALICE, card_id, "ok-7f3k9q2m")
        assert await meta.wait_for_delivery(tap) == [503, 200]
        await meta.wait_for_sent(2)
        await process.edit(Address("whatsapp", ALICE), card_id, "Allowed by Alice.")
        await until(lambda: len(meta.sent) == 3, what="the edit sent")
        pdf = OutboundFile(Address("whatsapp", ALICE), "report.pdf", "application/pdf", PDF)
        file_id = await process.send_file(pdf)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    assert core.taps == [CardTap(Address("whatsapp", ALICE), ALICE, "ok-7f3k9q2m", card_id)]
    assert meta.sent[0]["type"] == "interactive"
    document = meta.sent[3]
    assert (document["type"], document["id"]) == ("document", file_id)
    assert meta.uploads[document["document"]["id"]].data == PDF
    assert [m["text"]["body"] for m in meta.sent[1:3]] == [
        f"Allowed by {ALICE}.",
        "Allowed by Alice.",
    ]
