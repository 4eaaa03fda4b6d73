"""The frames between the core and an adapter process: the socket says which channel, and a
frame that is not what the protocol says is refused, never believed."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from clawpen.channels import wire
from clawpen.channels.base import MAX_ATTACHMENT_BYTES, DeliveryStatus, SendError
from clawpen.models import Address, Attachment, InboundMessage, OutboundMessage, Rejection, Route

GOOD: dict[str, Any] = {
    "type": "inbound",
    "id": 3,
    "chat": "42",
    "thread": "",
    "sender": "7",
    "text": "hi",
    "platform_id": "99",
    "received_at": 1.5,
    "reply_to": "",
}


def test_an_inbound_message_round_trips() -> None:
    message = InboundMessage(Address("telegram", "42", "t"), "7", "hi \ud800", "99", 1.5, "98")
    line = wire.encode(wire.inbound_frame(3, message))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    frame = asyncio.run(_read(line))
    assert wire.parse_inbound(frame, "telegram") == (3, message)


async def _read(data: bytes) -> dict[str, Any]:
    reader = asyncio.StreamReader(limit=wire.MAX_FRAME)
    reader.feed_data(data)
    reader.feed_eof()
    frame = await wire.read_frame(reader)
    assert frame is not None
    return frame


def test_the_channel_comes_from_the_socket_not_from_the_frame() -> None:
    forged = {**GOOD, "channel": "slack", "address": "cli:assistant"}
    _, message = wire.parse_inbound(forged, "telegram")
    assert message.address == Address("telegram", "42")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"text": 123}, "inbound.text must be a string", id="text_not_a_string"),
        pytest.param({"text": ["a"]}, "inbound.text must be a string", id="text_a_list"),
        pytest.param({"chat": ""}, "must not be empty", id="no_chat"),
        pytest.param({"chat": "9" * 300}, "longer than 256", id="endless_chat_id"),
        pytest.param({"received_at": "now"}, "received_at must be a number", id="bad_time"),
        pytest.param({"received_at": float("nan")}, "must be a number", id="nan_time"),
        pytest.param({"id": -1}, "non-negative integer", id="negative_id"),
        pytest.param({"id": True}, "non-negative integer", id="boolean_id"),
        pytest.param({"text": "x" * (wire.MAX_TEXT + 1)}, "longer than", id="endless_text"),
    ],
)
def test_a_malformed_inbound_frame_is_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(wire.FrameError, match=problem):
        wire.parse_inbound({**GOOD, **change}, "telegram")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"not json\n", "not JSON", id="garbage"),
        pytest.param(b"[1, 2]\n", "without a type", id="not_an_object"),
        pytest.param(b'{"id": 1}\n', "without a type", id="no_type"),
        pytest.param(b"x" * (wire.MAX_FRAME + 10), "over", id="endless_line"),
    ],
)
def test_a_broken_frame_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(wire.FrameError, match=problem):
        asyncio.run(_read(data))


def test_a_send_outcome_is_checked() -> None:
    ok = {"type": "sent", "id": 4, "platform_id": "55"}
    assert wire.parse_send_outcome(ok) == (4, "55", None)
    failed = wire.send_failed_frame(5, SendError("429", retry_after=3.0))
    request_id, platform_id, failure = wire.parse_send_outcome(failed)
    assert (request_id, platform_id) == (5, None)
    assert failure is not None
    assert (str(failure), failure.retry_after, failure.permanent) == ("429", 3.0, False)
    assert not failure.about_message
    bad = wire.parse_send_outcome(wire.send_failed_frame(6, SendError("x", about_message=True)))
    assert bad[2] is not None and bad[2].about_message
    with pytest.raises(wire.FrameError, match="retry_after"):
        wire.parse_send_outcome({**failed, "retry_after": 10**9})
    with pytest.raises(wire.FrameError, match="permanent"):
        wire.parse_send_outcome({**failed, "permanent": "yes"})


def test_decisions_and_sends_cross_intact() -> None:
    out = OutboundMessage(Address("telegram", "42", "7"), "answer", "99")
    assert wire.parse_send(wire.send_frame(9, out), "telegram") == (9, out)
    assert wire.parse_accepted(wire.accepted_frame(1, Route("a"))) == (1, Route(""))
    assert wire.parse_accepted(wire.accepted_frame(2, Rejection("no"))) == (2, Rejection(""))
    assert wire.parse_accepted(wire.accepted_frame(3, None)) == (3, None)


def test_files_and_the_mention_flag_cross_the_socket_unchanged() -> None:
    files = (Attachment("a.png", "image/png", b"\x89PNG\x00\xff"), Attachment("b", "x/y", b""))
    message = InboundMessage(
        Address("slack", "C1"), "U1", "hi", "1.2", 1.5, attachments=files, addressed=False
    )
    frame = asyncio.run(_read(wire.encode(wire.inbound_frame(4, message))))
    assert wire.parse_inbound(frame, "slack") == (4, message)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"attachments": [{"name": "a", "media_type": "x", "data": "%%%"}]}, "base64"),
        ({"attachments": "nope"}, "list"),
        ({"attachments": [{"name": "a", "media_type": "x", "data": "AA=="}] * 11}, "list"),
        ({"attachments": ["a"]}, "not an object"),
        ({"attachments": [{"name": 1, "media_type": "x", "data": "AA=="}]}, "name"),
        ({"addressed": "yes"}, "addressed"),
    ],
)
def test_bad_files_or_flags_are_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(wire.FrameError, match=problem):
        wire.parse_inbound(GOOD | change, "slack")


def test_a_file_over_the_limit_is_refused() -> None:
    big = base64.b64encode(b"x" * (MAX_ATTACHMENT_BYTES + 1)).decode()
    with pytest.raises(wire.FrameError, match="larger than the limit"):
        wire.parse_inbound(
            GOOD | {"attachments": [{"name": "a", "media_type": "x", "data": big}]}, "slack"
        )


def test_a_typing_signal_round_trips_and_is_checked() -> None:
    address = Address("discord", "123", "456")
    frame = wire.typing_frame(address, "789", True)
    assert wire.parse_typing(frame, "discord") == (address, "789", True)
    with pytest.raises(wire.FrameError, match="active"):
        wire.parse_typing(frame | {"active": 1}, "discord")


def test_a_delivery_status_round_trips_and_an_unknown_one_is_refused() -> None:
    status = DeliveryStatus("155", "wamid.1", "failed", "Re-engagement message", True)
    assert wire.parse_status(wire.status_frame(status)) == status
    with pytest.raises(wire.FrameError, match="one of"):
        wire.parse_status(wire.status_frame(status) | {"status": "exploded"})
