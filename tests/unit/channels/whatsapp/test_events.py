"""What WhatsApp's payloads and answers mean, as tables (``channels/whatsapp/events.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clawpen.channels.base import SendError
from clawpen.channels.webhook import parse_listen, sha256_signature_matches
from clawpen.channels.whatsapp.events import Malformed, Tap, parse_webhook, send_outcome

NUMBER = "106540352242922"


def webhook(*messages: dict[str, Any], number: str = NUMBER, **value: Any) -> bytes:
    inner = {"metadata": {"phone_number_id": number}, "messages": list(messages), **value}
    change = {"field": "messages", "value": inner}
    return json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"changes": [change]}]}
    ).encode()


def message(kind: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return (
        {"from": "15551234567", "id": "wamid.1", "timestamp": "1700000000", "type": kind}
        | {kind: content}
        | extra
    )


@pytest.mark.parametrize(
    ("kind", "content", "text"),
    [
        ("text", {"body": "hi"}, "hi"),
        ("image", {"id": "77", "mime_type": "image/jpeg", "caption": "look"}, "look"),
        ("audio", {"id": "78", "mime_type": "audio/ogg; codecs=opus", "voice": True}, ""),
        (
            "location",
            {"latitude": 52.52, "longitude": 13.4, "name": "Mitte"},
            "[location: 52.52, 13.4 Mitte]",
        ),
        (
            "interactive",
            {"type": "list_reply", "list_reply": {"id": "y", "title": "Yes"}},
            "Yes",
        ),
        ("button", {"text": "Stop promotions", "payload": "stop"}, "Stop promotions"),
        ("unsupported", {}, "[a WhatsApp unsupported message, which clawpen cannot read]"),
    ],
)
def test_each_kind_of_message_reads_as_text_the_agent_can_use(
    kind: str, content: dict[str, Any], text: str
) -> None:
    [parsed] = parse_webhook(webhook(message(kind, content)), NUMBER).messages
    assert (parsed.wa_id, parsed.wamid, parsed.timestamp) == ("15551234567", "wamid.1", 1.7e9)
    assert parsed.text == text


def test_a_button_reply_is_a_tap_by_its_sender_on_the_card_it_quotes() -> None:
    reply = {"type": "button_reply", "button_reply": {"id": "ok-7f3k9q2m", "title": "Allow"}}
    quoting = {"context": {"from": "15550001111", "id": "wamid.card"}}
    parsed = parse_webhook(webhook(message("interactive", reply, **quoting)), NUMBER)
    assert parsed.messages == ()
    assert parsed.taps == (Tap("15551234567", "wamid.1", "ok-7f3k9q2m", "wamid.card"),)
    # an id no button of ours can have (longer than a button's data) is only its title's text
    odd = {"type": "button_reply", "button_reply": {"id": "x" * 65, "title": "Allow"}}
    parsed = parse_webhook(webhook(message("interactive", odd, **quoting)), NUMBER)
    assert parsed.taps == () and parsed.messages[0].text == "Allow"


def test_a_voice_note_is_media_without_its_codec_parameter() -> None:
    audio = {"id": "78", "mime_type": "audio/ogg; codecs=opus", "voice": True}
    [parsed] = parse_webhook(webhook(message("audio", audio)), NUMBER).messages
    assert parsed.media is not None
    assert (parsed.media.media_id, parsed.media.mime_type, parsed.media.voice) == (
        "78",
        "audio/ogg",
        True,
    )


def test_reactions_and_other_numbers_messages_are_left_out_and_said_why() -> None:
    reaction = message("reaction", {"message_id": "wamid.0", "emoji": "\N{THUMBS UP SIGN}"})
    assert parse_webhook(webhook(reaction), NUMBER).ignored == ("reaction",)
    elsewhere = parse_webhook(webhook(message("text", {"body": "x"}), number="42"), NUMBER)
    assert (elsewhere.messages, elsewhere.ignored) == ((), ("phone number 42",))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"object": "whatsapp_business_account", "entry": {}}',
        webhook({"from": "15551234567", "id": "wamid.1", "type": "text", "text": "not an object"}),
        webhook(message("text", {"body": "x"}, id="wamid with spaces")),
        webhook(message("text", {"body": "x"}, timestamp="1e9")),
        webhook(message("image", {"mime_type": "image/png"})),  # no media id
    ],
)
def test_what_is_not_metas_shape_is_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse_webhook(body, NUMBER)


def test_a_status_with_error_131047_is_a_closed_window() -> None:
    failed = {
        "id": "wamid.9",
        "status": "failed",
        "recipient_id": "15551234567",
        "errors": [{"code": 131047, "title": "Re-engagement message"}],
    }
    [status] = parse_webhook(webhook(statuses=[failed]), NUMBER).statuses
    assert status.window_closed and status.status == "failed"
    assert status.error == "131047 Re-engagement message"


def graph_error(code: int, message: str = "oops") -> bytes:
    return json.dumps({"error": {"message": message, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "permanent", "words"),
    [
        (429, graph_error(130429), None, False, "error 130429"),
        (400, graph_error(131056), None, False, "error 131056"),  # pair rate limit
        (500, graph_error(131000), None, False, "HTTP 500"),
        (503, b"<html>", None, False, "HTTP 503"),
        (400, graph_error(131047), None, True, "the 24-hour window closed"),
        (401, graph_error(190), None, True, "channels.whatsapp.access_token"),
        (400, graph_error(100, "Invalid parameter"), None, True, "Invalid parameter"),
        (200, b'{"messages": []}', None, False, "no message id"),
    ],
)
def test_a_refused_send_says_whether_trying_again_can_help(
    status: int, body: bytes, retry_after: float | None, permanent: bool, words: str
) -> None:
    with pytest.raises(SendError) as refused:
        send_outcome(status, body)
    assert (refused.value.retry_after, refused.value.permanent) == (retry_after, permanent)
    assert words in str(refused.value)


def test_a_sent_message_is_known_by_its_wamid_and_a_429_keeps_metas_wait() -> None:
    assert send_outcome(200, b'{"messages": [{"id": "wamid.X"}]}') == "wamid.X"
    with pytest.raises(SendError) as throttled:
        send_outcome(429, graph_error(130429), retry_after="12")
    assert throttled.value.retry_after == 12.0


def test_signatures_are_metas_hmac_of_the_raw_body() -> None:
    # a known vector: HMAC-SHA256("secret", "body")
    good = "sha256=dc46983557fea127b43af721467eb9b3fde2338fe3e14f51952aa8478c13d355"
    assert sha256_signature_matches(b"secret", b"body", good)
    assert sha256_signature_matches(b"secret", b"body", good.upper().replace("SHA256", "sha256"))
    assert not sha256_signature_matches(b"secret", b"body ", good)
    assert not sha256_signature_matches(b"secret", b"body", good[7:])
    assert not sha256_signature_matches(b"secret", b"body", None)
    assert not sha256_signature_matches(b"secret", b"body", "sha256=\N{SNOWMAN}")


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_is_host_and_port(listen: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["8787", "localhost", ":8787", "host:99999", "host:http"])
def test_a_listen_that_is_not_host_and_port_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(listen)
