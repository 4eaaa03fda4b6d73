"""The WhatsApp adapter against the fake Cloud API: Meta's signed webhooks in, Graph API out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from clawpen.channels.base import MAX_ATTACHMENT_BYTES, ChannelFatal, SendError
from clawpen.channels.whatsapp import WhatsAppAdapter, WhatsAppSettings, plugin
from clawpen.config import load_settings
from clawpen.errors import ConfigError
from clawpen.models import Address, OutboundMessage
from tests.fakes.fake_whatsapp import FakeWhatsApp

from .support import Core, running_adapter

PNG = bytes.fromhex("89504e470d0a1a0a") + b"fake png body" * 10
ALICE = "15551234567"


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


def reply(text: str, reply_to: str = "") -> OutboundMessage:
    return OutboundMessage(Address("whatsapp", ALICE), text, reply_to)


def test_settings_are_accepted_exactly_as_the_issue_writes_them() -> None:
    settings = WhatsAppSettings.model_validate(
        {
            "phone_number_id": "106540352242922",
            "access_token": "EAAG-token",
            "app_secret": "app-secret",
            "verify_token": "verify-me",
            "api_base_url": "https://graph.facebook.com/v21.0",
            "listen": "127.0.0.1:8787",
        }
    )
    assert settings.listen == "127.0.0.1:8787"
    assert "EAAG-token" not in repr(settings) and "app-secret" not in repr(settings)
    defaults = WhatsAppSettings(
        phone_number_id="1", access_token="t", app_secret="s", verify_token="v"
    )
    assert (defaults.api_base_url, defaults.listen) == (
        "https://graph.facebook.com/v21.0",
        "127.0.0.1:8787",
    )
    assert plugin.chat_problem(ALICE) is None
    assert plugin.chat_problem("+15551234567") is not None  # wa_ids carry no "+"
    assert set(plugin.credentials) == {"access_token", "app_secret", "verify_token"}


async def test_the_handshake_echoes_the_challenge_only_for_our_verify_token(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    assert await meta.handshake(meta.verify_token, "8675309") == (200, "8675309")
    status, text = await meta.handshake("not-the-token", "8675309")
    assert status == 403 and "8675309" not in text


async def test_a_message_comes_in_and_the_reply_goes_out_quoting_it(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    wamid = meta.user_says(ALICE, "hello there")
    assert await meta.wait_for_delivery(wamid) == [200]
    [message] = core.messages
    assert message.address == Address("whatsapp", ALICE)
    assert (message.sender_id, message.text, message.platform_id) == (ALICE, "hello there", wamid)
    assert message.addressed

    sent_id = await adapter.send(reply("hi Alice", reply_to=wamid))
    [sent] = meta.sent
    assert sent["to"] == ALICE and sent["text"]["body"] == "hi Alice"
    assert sent["context"] == {"message_id": wamid}
    assert sent_id == sent["id"]


async def test_an_answer_to_a_quoted_message_says_which(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    await meta.wait_for_delivery(meta.user_says(ALICE, "about that", reply_to="wamid.earlier"))
    assert core.messages[0].reply_to == "wamid.earlier"


async def test_an_image_reaches_accept_as_an_attachment_with_its_caption(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    wamid = meta.user_sends_image(ALICE, PNG, caption="what is this?")
    await meta.wait_for_delivery(wamid)
    [message] = core.messages
    assert message.text == "what is this?"
    [file] = message.attachments
    assert (file.media_type, file.data) == ("image/png", PNG)
    assert file.name.startswith("image-") and file.name.endswith(".png")


async def test_documents_and_voice_notes_are_downloaded_too(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    pdf = meta.add_media(b"%PDF-1.4 report", "application/pdf")
    voice = meta.add_media(b"OggS voice", "audio/ogg")
    document = {"id": pdf, "mime_type": "application/pdf", "filename": "report.pdf"}
    audio = {"id": voice, "mime_type": "audio/ogg; codecs=opus", "voice": True}
    await meta.wait_for_delivery(meta.user_sends(ALICE, "document", document))
    await meta.wait_for_delivery(meta.user_sends(ALICE, "audio", audio))
    files = [m.attachments[0] for m in core.messages]
    assert [(f.name, f.media_type, f.data) for f in files] == [
        ("report.pdf", "application/pdf", b"%PDF-1.4 report"),
        (f"voice-{voice[-12:]}.ogg", "audio/ogg", b"OggS voice"),
    ]


async def test_a_file_over_the_limit_is_named_not_downloaded(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    big = meta.add_media(bytes(MAX_ATTACHMENT_BYTES + 1), "video/mp4")
    await meta.wait_for_delivery(
        meta.user_sends(ALICE, "video", {"id": big, "mime_type": "video/mp4"})
    )
    [message] = core.messages
    assert message.attachments == ()
    assert "not downloaded, 20.0 MB is over the 20 MB limit" in message.text
    assert meta.media_downloads == []


async def test_media_that_cannot_be_fetched_still_delivers_the_message_with_a_note(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    image = {"id": "999999", "mime_type": "image/jpeg", "caption": "look"}
    await meta.wait_for_delivery(meta.user_sends(ALICE, "image", image))
    [message] = core.messages
    assert message.attachments == ()
    assert message.text == "look\n[image-999999.jpg: could not be downloaded from WhatsApp]"


async def test_forged_and_unsigned_posts_are_refused_with_401_and_never_accepted(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    body = json.dumps(meta.payload({"messages": [_text_message("wamid.forged")]})).encode()
    other = b'{"object": "whatsapp_business_account", "entry": []}'
    with structlog.testing.capture_logs() as logs:
        answers = [
            await meta.post(body),  # unsigned
            await meta.post(body, {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
            await meta.post(body, {"X-Hub-Signature-256": meta.sign(other)}),  # another body's
            await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)[7:]}),  # no prefix
            await meta.post(body + b" ", {"X-Hub-Signature-256": meta.sign(body)}),  # altered
        ]
    assert [status for status, _ in answers] == [401] * 5
    assert core.offered == []
    refused = [e for e in logs if e["event"] == "webhook_refused"]
    assert [e["status"] for e in refused] == [401] * 5
    assert refused[0]["reason"] == "signature missing"
    # and the real one, signed as Meta signs, is taken
    assert await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)}) == (200, "ok")
    assert [m.platform_id for m in core.messages] == ["wamid.forged"]


async def test_a_signed_post_that_is_not_metas_shape_is_refused_with_400(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    for body in (b"not json", b"[1, 2]", b'{"object": "whatsapp_business_account"}'):
        status, _ = await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)})
        assert status == 400, body
    assert core.offered == []


async def test_a_body_over_a_mebibyte_is_refused_before_it_is_read(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    body = b"x" * (1024 * 1024 + 1)
    status, _ = await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)})
    assert status == 413
    assert core.offered == []


async def test_a_redelivery_is_offered_again_with_the_same_id_and_answered_200(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    wamid = meta.user_says(ALICE, "once")
    await meta.wait_for_delivery(wamid)
    meta.redeliver(wamid)
    assert await meta.wait_for_attempts(wamid, 2) == [200, 200]
    assert core.offered == [wamid, wamid]  # the core drops the copy by its id
    assert [m.text for m in core.messages] == ["once"]


async def test_a_message_the_store_could_not_commit_is_not_answered_200_and_comes_again(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    core.unavailable = 2
    wamid = meta.user_says(ALICE, "are you there?")
    assert await meta.wait_for_delivery(wamid) == [503, 503, 200]
    assert [m.text for m in core.messages] == ["are you there?"]


async def test_messages_to_another_business_number_and_reactions_reach_no_agent(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    reaction = {"message_id": "wamid.ours", "emoji": "\N{THUMBS UP SIGN}"}
    await meta.wait_for_delivery(meta.user_sends(ALICE, "reaction", reaction))
    payload = meta.payload({"messages": [_text_message("wamid.elsewhere")]})
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    body = json.dumps(payload).encode()
    assert await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)}) == (200, "ok")
    await meta.wait_for_delivery(meta.user_sends(ALICE, "sticker_pack", {}))
    assert [m.text for m in core.messages] == [
        "[a WhatsApp sticker_pack message, which clawpen cannot read]"
    ]


async def test_delivery_statuses_are_reported_with_a_closed_window_marked(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    await meta.wait_for_delivery(meta.status(ALICE, "wamid.a", "delivered"))
    await meta.wait_for_delivery(meta.status(ALICE, "wamid.a", "read"))
    await meta.wait_for_delivery(meta.status(ALICE, "wamid.b", "failed", error_code=131047))
    assert [(s.chat, s.platform_id, s.status, s.window_closed) for s in core.statuses] == [
        (ALICE, "wamid.a", "delivered", False),
        (ALICE, "wamid.a", "read", False),
        (ALICE, "wamid.b", "failed", True),
    ]
    assert "131047" in core.statuses[2].error
    assert core.offered == []


async def test_a_reply_refused_because_the_24_hour_window_closed_is_permanent_and_says_why(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    meta.close_window(ALICE)
    with pytest.raises(SendError) as refused:
        await adapter.send(reply("too late"))
    assert refused.value.permanent
    assert "24-hour window closed" in str(refused.value)
    assert "the user must write first" in str(refused.value)


async def test_a_429_and_a_5xx_on_send_are_errors_worth_retrying(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    meta.fail_next(429, retry_after=7)
    meta.fail_next(503)
    meta.fail_next(400, code=131056)  # Meta's "pair rate limit": too fast to one user
    with pytest.raises(SendError) as throttled:
        await adapter.send(reply("one"))
    with pytest.raises(SendError) as unavailable:
        await adapter.send(reply("one"))
    with pytest.raises(SendError) as paced:
        await adapter.send(reply("one"))
    assert (throttled.value.retry_after, throttled.value.permanent) == (7.0, False)
    assert not unavailable.value.permanent and "HTTP 503" in str(unavailable.value)
    assert not paced.value.permanent
    await adapter.send(reply("one"))
    assert meta.texts_to(ALICE) == ["one"]


async def test_a_refused_token_on_send_is_permanent_and_names_the_setting(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    meta.access_token = "EAAG-rotated"
    with pytest.raises(SendError) as refused:
        await adapter.send(reply("hi"))
    assert refused.value.permanent
    assert "channels.whatsapp.access_token" in str(refused.value)


async def test_a_refused_token_at_start_is_fatal_and_names_the_setting(
    meta: FakeWhatsApp, core: Core
) -> None:
    settings = WhatsAppSettings.model_validate(meta.settings() | {"access_token": "EAAG-wrong"})
    with pytest.raises(ChannelFatal, match=r"channels\.whatsapp\.access_token"):
        await WhatsAppAdapter(settings).run(core)


async def test_an_unknown_phone_number_id_at_start_is_fatal_and_names_the_setting(
    meta: FakeWhatsApp, core: Core
) -> None:
    settings = WhatsAppSettings.model_validate(meta.settings() | {"phone_number_id": "12345"})
    with pytest.raises(ChannelFatal, match=r"channels\.whatsapp\.phone_number_id"):
        await WhatsAppAdapter(settings).run(core)


async def test_an_address_in_use_is_fatal_and_names_the_setting(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    taken = adapter.server.url.removeprefix("http://")
    settings = WhatsAppSettings.model_validate(meta.settings(listen=taken))
    with pytest.raises(ChannelFatal, match=r"channels\.whatsapp\.listen"):
        await WhatsAppAdapter(settings).run(core)


async def test_typing_marks_the_message_read_with_an_indicator_once(
    meta: FakeWhatsApp, adapter: WhatsAppAdapter
) -> None:
    address = Address("whatsapp", ALICE)
    for active in (True, True, True, False):
        await adapter.typing(address, "wamid.question", active)
    assert meta.reads == [
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.question",
            "typing_indicator": {"type": "text"},
        }
    ]
    meta.access_token = "EAAG-rotated"
    await adapter.typing(address, "wamid.next", True)  # fails quietly: best effort


async def test_a_burst_of_messages_in_one_webhook_is_committed_before_the_200(
    meta: FakeWhatsApp, core: Core, adapter: WhatsAppAdapter
) -> None:
    messages = [_text_message(f"wamid.{i}", text=f"part {i}") for i in range(20)]
    body = json.dumps(meta.payload({"messages": messages})).encode()
    assert await meta.post(body, {"X-Hub-Signature-256": meta.sign(body)}) == (200, "ok")
    assert [m.text for m in core.messages] == [f"part {i}" for i in range(20)]


def _text_message(wamid: str, text: str = "hi") -> dict[str, object]:
    return {
        "from": ALICE,
        "id": wamid,
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": text},
    }


def test_the_issues_configuration_loads_with_its_secrets_from_the_environment(
    tmp_path: Path,
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        """
model: {name: claude-sonnet-4-5, api_key: env:ANTHROPIC_API_KEY}
agents: [{id: assistant}]
channels:
  whatsapp:
    phone_number_id: "106540352242922"
    access_token: env:WHATSAPP_TOKEN
    app_secret: env:WHATSAPP_APP_SECRET        # checks X-Hub-Signature-256 on every webhook
    verify_token: env:WHATSAPP_VERIFY_TOKEN    # the webhook subscription handshake
    api_base_url: https://graph.facebook.com/v21.0
    listen: 127.0.0.1:8787
pairings:
  - channel: whatsapp:15551234567              # the user's number (wa_id)
    agent: assistant
"""
    )
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "WHATSAPP_TOKEN": "EAAG-t",
        "WHATSAPP_APP_SECRET": "app-s",
        "WHATSAPP_VERIFY_TOKEN": "verify-v",
    }
    settings = load_settings(config, env)
    whatsapp = settings.channels.whatsapp  # type: ignore[attr-defined]
    assert (whatsapp.access_token, whatsapp.app_secret, whatsapp.verify_token) == (
        "EAAG-t",
        "app-s",
        "verify-v",
    )
    unquoted = config.read_text().replace('"106540352242922"', "106540352242922")
    config.write_text(unquoted.replace("listen: 127.0.0.1:8787", "listen: localhost"))
    with pytest.raises(ConfigError, match=r"channels\.whatsapp\.listen.*HOST:PORT"):
        load_settings(config, env)
    config.write_text(unquoted)
    assert load_settings(config, env).channels.whatsapp.phone_number_id == "106540352242922"  # type: ignore[attr-defined]
