"""A file an agent sends back crosses to the adapter process as one ``send_file`` frame, checked
there as strictly as every frame: a broken or hostile one is refused, never half-delivered."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from clawpen.channels import wire
from clawpen.channels.base import MAX_FILE_BYTES
from clawpen.models import Address, OutboundFile

FILE = OutboundFile(
    Address("telegram", "42", "7"),
    "chart.png",
    "image/png",
    b"\x89PNG\r\n\x1a\n...",
    caption="the chart",
    reply_to="9",
)


def test_a_file_round_trips_for_the_sockets_channel() -> None:
    frame = wire.send_file_frame(3, FILE)
    request_id, file = wire.parse_send_file(frame, "telegram")
    assert (request_id, file) == (3, FILE)
    assert wire.parse_send_file(frame | {"channel": "slack"}, "telegram")[1].address.channel == (
        "telegram"
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"name": "../../etc/passwd"}, "plain file name"),
        ({"name": "a\\b"}, "plain file name"),
        ({"name": ".."}, "plain file name"),
        ({"name": ""}, "plain file name"),
        ({"name": "x" * 300}, "longer than"),
        ({"media_type": "text/html; charset=utf-8"}, "type/subtype"),
        ({"media_type": "IMAGE"}, "type/subtype"),
        ({"media_type": 7}, "must be a string"),
        ({"data": "not base64!"}, "not base64"),
        ({"data": ""}, "empty"),
        ({"data": None}, "must be a string"),
        ({"chat": ""}, "must not be empty"),
        ({"caption": "c" * (wire.MAX_CAPTION + 1)}, "longer than"),
        ({"id": -1}, "non-negative"),
        ({"id": True}, "non-negative"),
    ],
)
def test_a_hostile_send_file_frame_is_refused(change: dict[str, Any], problem: str) -> None:
    frame = wire.send_file_frame(3, FILE) | change
    with pytest.raises(wire.FrameError, match=problem):
        wire.parse_send_file(frame, "telegram")


def test_a_file_over_the_largest_limit_is_refused_before_it_is_decoded() -> None:
    too_big = "A" * ((MAX_FILE_BYTES + 2) // 3 * 4 + 4)
    with pytest.raises(wire.FrameError, match=f"over {MAX_FILE_BYTES} bytes"):
        wire.parse_send_file(wire.send_file_frame(3, FILE) | {"data": too_big}, "telegram")


def test_the_adapter_reads_frames_large_enough_for_the_largest_file() -> None:
    largest = OutboundFile(FILE.address, "big.bin", "application/octet-stream", b"x")
    frame = wire.send_file_frame(1, largest)
    overhead = len(wire.encode(frame)) - len(frame["data"])
    assert overhead + len(base64.b64encode(b"x" * 3)) * MAX_FILE_BYTES // 3 < wire.MAX_CORE_FRAME
