"""A file back on WhatsApp, against the fake Cloud API: uploaded to ``/{phone-number-id}/media``
(multipart, as Meta takes it), then sent as an image (a JPEG or PNG up to 5 MB) or a document
(with its file name), naming the upload."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clawpen.channels.base import MB, SendError
from clawpen.channels.whatsapp import WhatsAppAdapter, plugin
from clawpen.models import Address, OutboundFile
from tests.fakes.fake_whatsapp import FakeWhatsApp

from .support import Core, running_adapter

ALICE = "15551234567"
TO = Address("whatsapp", ALICE)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"


@pytest.fixture
async def meta() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def adapter(meta: FakeWhatsApp) -> AsyncIterator[WhatsAppAdapter]:
    async with running_adapter(meta, Core()) as running:
        yield running


async def test_a_photo_and_a_pdf_are_uploaded_then_sent_as_image_and_document(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    photo_id = await adapter.send_file(OutboundFile(TO, "chart.png", "image/png", PNG, "a chart"))
    pdf_id = await adapter.send_file(
        OutboundFile(TO, "form.pdf", "application/pdf", PDF, "filled in", reply_to="wamid.q")
    )
    image, document = meta.sent
    assert (image["type"], image["to"], image["id"]) == ("image", ALICE, photo_id)
    assert image["image"]["caption"] == "a chart"
    upload = meta.uploads[image["image"]["id"]]
    assert (upload.media_type, upload.name, upload.data) == ("image/png", "chart.png", PNG)

    assert (document["type"], document["id"]) == ("document", pdf_id)
    assert document["document"]["filename"] == "form.pdf"
    assert document["document"]["caption"] == "filled in"
    assert document["context"] == {"message_id": "wamid.q"}
    upload = meta.uploads[document["document"]["id"]]
    assert (upload.media_type, upload.content_type, upload.data) == (
        "application/pdf",
        "application/pdf",
        PDF,
    )


async def test_a_picture_over_five_megabytes_is_refused_naming_the_limit(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    # Meta classes an upload by its type: a PNG is an image, and an image is 5 MB at most
    large = PNG + bytes(5 * MB)
    with pytest.raises(SendError) as refused:
        await adapter.send_file(OutboundFile(TO, "big.png", "image/png", large))
    assert refused.value.permanent and "5 MB limit for an image" in str(refused.value)
    assert meta.uploads == {}


async def test_a_csv_goes_as_a_plain_text_document_under_its_own_name(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    await adapter.send_file(OutboundFile(TO, "clean.csv", "text/csv", b"a,b\n1,2\n"))
    [sent] = meta.sent
    assert sent["document"]["filename"] == "clean.csv"
    upload = meta.uploads[sent["document"]["id"]]
    assert (upload.media_type, upload.name, upload.data) == (
        "text/plain",
        "clean.csv",
        b"a,b\n1,2\n",
    )


async def test_a_file_over_a_hundred_megabytes_is_refused_before_any_upload(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    huge = OutboundFile(TO, "dump.pdf", "application/pdf", bytes(100 * MB + 1))
    with pytest.raises(SendError) as refused:
        await adapter.send_file(huge)
    assert refused.value.permanent and "100 MB" in str(refused.value)
    assert meta.uploads == {} and meta.sent == []


async def test_a_closed_window_and_a_refused_type_are_permanent_a_429_is_retried(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    meta.close_window(ALICE)
    with pytest.raises(SendError) as closed:
        await adapter.send_file(OutboundFile(TO, "form.pdf", "application/pdf", PDF))
    assert closed.value.permanent and "24-hour window closed" in str(closed.value)

    with pytest.raises(SendError) as refused:  # WhatsApp takes no zip files
        await adapter.send_file(OutboundFile(TO, "a.zip", "application/zip", b"PK\x03\x04"))
    assert refused.value.permanent and "131053" in str(refused.value)

    meta.closed_windows.clear()
    meta.fail_next(429, retry_after=4)
    with pytest.raises(SendError) as throttled:
        await adapter.send_file(OutboundFile(TO, "form.pdf", "application/pdf", PDF))
    assert (throttled.value.retry_after, throttled.value.permanent) == (4.0, False)
    await adapter.send_file(OutboundFile(TO, "form.pdf", "application/pdf", PDF))
    assert [m["type"] for m in meta.sent] == ["document"]


def test_whatsapps_upload_limit_is_the_cloud_apis_for_documents() -> None:
    assert plugin.max_file_bytes == 100 * MB
