"""Approval cards across the process boundary: buttons, edits, taps and their answers cross
intact, and a hostile adapter's tap frame is refused rather than believed."""

from __future__ import annotations

from typing import Any

import pytest

from clawpen.channels import wire
from clawpen.models import Address, Button, CardTap, OutboundMessage, TapOutcome

TAP: dict[str, Any] = {
    "type": "tap",
    "id": 4,
    "chat": "42",
    "thread": "",
    "sender": "7",
    "data": "ok-7f3k9q2m",
    "platform_id": "99",
}


def test_a_card_its_edit_a_tap_and_its_answer_round_trip() -> None:
    buttons = (Button("Allow", "ok-7f3k9q2m"), Button("Deny", "no-7f3k9q2m"))
    card = OutboundMessage(Address("telegram", "42"), "assistant wants to...", buttons=buttons)
    assert wire.parse_send(wire.send_frame(9, card), "telegram") == (9, card)

    edit = wire.edit_frame(10, Address("telegram", "42", "5"), "99", "Allowed by ann")
    assert wire.parse_edit(edit, "telegram") == (
        10,
        Address("telegram", "42", "5"),
        "99",
        "Allowed by ann",
    )

    tap = CardTap(Address("telegram", "42"), "7", "ok-7f3k9q2m", "99")
    assert wire.parse_tap(wire.tap_frame(4, tap), "telegram") == (4, tap)

    outcome = TapOutcome("Allowed.", "Allowed by ann")
    assert wire.parse_tap_result(wire.tap_result_frame(4, outcome)) == (4, outcome)


def test_the_channel_of_a_tap_comes_from_the_socket() -> None:
    _, tap = wire.parse_tap({**TAP, "channel": "slack"}, "telegram")
    assert tap.address.channel == "telegram"


def test_a_send_frame_without_buttons_is_still_read() -> None:
    frame = wire.send_frame(1, OutboundMessage(Address("telegram", "42"), "hi"))
    del frame["buttons"]
    assert wire.parse_send(frame, "telegram")[1].buttons == ()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sender": ""}, "must not be empty"),
        ({"sender": 7}, "tap.sender must be a string"),
        ({"chat": ""}, "must not be empty"),
        ({"data": ""}, "1 to 64 bytes"),
        ({"data": "x" * 65}, "longer than 64"),
        ({"data": "é" * 33}, "1 to 64 bytes"),  # 66 bytes in 33 characters
        ({"data": ["ok"]}, "tap.data must be a string"),
        ({"id": -1}, "tap.id"),
        ({"id": True}, "tap.id"),
        ({"platform_id": "9" * 300}, "longer than"),
        ({"thread": None}, "tap.thread must be a string"),
    ],
)
def test_a_hostile_tap_frame_is_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(wire.FrameError, match=problem):
        wire.parse_tap({**TAP, **change}, "telegram")


@pytest.mark.parametrize(
    ("buttons", "problem"),
    [
        ("Allow", "list of at most"),
        ([{"label": "A", "data": str(i)} for i in range(9)], "list of at most"),
        (["Allow"], "not an object"),
        ([{"label": "", "data": "ok"}], "label must not be empty"),
        ([{"label": "Allow", "data": "x" * 65}], "longer than 64"),
        ([{"label": "Allow"}], "button.data must be a string"),
    ],
)
def test_bad_buttons_are_refused(buttons: Any, problem: str) -> None:
    frame = wire.send_frame(1, OutboundMessage(Address("telegram", "42"), "card"))
    with pytest.raises(wire.FrameError, match=problem):
        wire.parse_send({**frame, "buttons": buttons}, "telegram")


def test_a_bad_edit_or_tap_result_is_refused() -> None:
    edit = wire.edit_frame(1, Address("telegram", "42"), "99", "done")
    with pytest.raises(wire.FrameError, match=r"edit.platform_id must be a string"):
        wire.parse_edit({**edit, "platform_id": None}, "telegram")
    with pytest.raises(wire.FrameError, match=r"tap_result.notice is longer"):
        wire.parse_tap_result({"type": "tap_result", "id": 1, "notice": "x" * 500})
    with pytest.raises(wire.FrameError, match=r"tap_result.card must be a string"):
        wire.parse_tap_result({"type": "tap_result", "id": 1, "card": 3})


def test_a_platform_without_buttons_shows_codes_to_reply_with() -> None:
    from clawpen.channels.base import with_reply_codes

    card = OutboundMessage(
        Address("email", "a@b.c"),
        "assistant wants to fetch x",
        buttons=(Button("Allow", "ok-7f3k9q2m"), Button("Deny", "no-7f3k9q2m")),
    )
    plain = with_reply_codes(card)
    assert plain.buttons == ()
    assert plain.text.splitlines()[-2:] == [
        "To Allow, reply with: ok-7f3k9q2m",
        "To Deny, reply with: no-7f3k9q2m",
    ]
    bare = OutboundMessage(Address("email", "a@b.c"), "hi")
    assert with_reply_codes(bare) is bare
