"""A file back on Telegram, through python-telegram-bot against the fake Bot API: a picture as
a photo (``sendPhoto``), anything else, or a picture over 10 MB, as a document."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clawpen.channels.base import SendError
from clawpen.channels.telegram import plugin
from clawpen.channels.telegram.adapter import TelegramAdapter, TelegramSettings
from clawpen.models import Address, OutboundFile
from tests.fakes.fake_telegram import FakeTelegram

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def adapter(fake: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    channel = TelegramAdapter(TelegramSettings(token=fake.token, api_base_url=fake.url))
    await channel.bot.initialize()
    yield channel
    await channel.bot.shutdown()


async def test_a_picture_goes_as_a_photo_and_a_pdf_as_a_document(
    adapter: TelegramAdapter, fake: FakeTelegram
) -> None:
    to = Address("telegram", "42")
    photo_id = await adapter.send_file(OutboundFile(to, "chart.png", "image/png", PNG, "a chart"))
    document_id = await adapter.send_file(OutboundFile(to, "form.pdf", "application/pdf", PDF))

    photo, document = fake.uploads
    assert (photo["method"], photo["chat_id"], photo["name"]) == ("sendPhoto", 42, "chart.png")
    assert (photo["data"], photo["caption"]) == (PNG, "a chart")
    assert (document["method"], document["name"], document["data"]) == (
        "sendDocument",
        "form.pdf",
        PDF,
    )
    assert document["content_type"] == "application/pdf"
    assert photo_id != document_id and photo_id.isdigit()


async def test_a_picture_over_ten_megabytes_goes_as_a_document(
    adapter: TelegramAdapter, fake: FakeTelegram
) -> None:
    large = PNG + b"\x00" * (10 * 1024 * 1024)
    await adapter.send_file(OutboundFile(Address("telegram", "42"), "big.png", "image/png", large))
    [upload] = fake.uploads
    assert upload["method"] == "sendDocument" and len(upload["data"]) == len(large)


async def test_a_refused_upload_is_a_send_error_and_a_429_carries_its_wait(
    adapter: TelegramAdapter, fake: FakeTelegram
) -> None:
    fake.fail_next("sendDocument", 429, retry_after=3)
    with pytest.raises(SendError) as waited:
        await adapter.send_file(
            OutboundFile(Address("telegram", "42"), "a.pdf", "application/pdf", PDF)
        )
    assert waited.value.retry_after == 3
    assert fake.uploads == []


def test_telegrams_upload_limit_is_the_bot_apis() -> None:
    assert plugin.max_file_bytes == 50 * 1024 * 1024
