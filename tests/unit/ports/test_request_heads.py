"""A head is handed to aiohttp only when it is whole and good (``ports/heads.py``): pure, so the
rules are a table. What the door answers for each is in ``test_door_caps.py``."""

from __future__ import annotations

import pytest

from clawpen.ports.heads import BadHead, Head, HeadLimits, check_head

LIMITS = HeadLimits(max_line_size=64, max_field_size=64, max_headers=4)
GOOD = b"POST /v1/tasks/1/result HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"

REFUSED = {
    "tls_hello": (b"\x16\x03\x01\x00\xa5\x01\x00 garbage\r\n\r\n", "malformed_request"),
    "tls_hello_not_yet_ended": (b"\x16\x03\x01\x00\xa5", "malformed_request"),
    "http2_preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "malformed_request"),
    "no_version": (b"GET /\r\n\r\n", "malformed_request"),
    "bare_line_feeds": (b"GET / HTTP/1.1\nHost: a\n\n", "malformed_request"),
    "header_without_colon": (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", "malformed_request"),
    "folded_header": (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "malformed_request"),
    "nul_in_a_header": (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "malformed_request"),
    "length_not_a_number": (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "malformed_request"),
    "length_twice": (
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "malformed_request",
    ),
    "length_and_chunked": (
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "malformed_request",
    ),
    "long_request_line": (b"GET /" + b"x" * 64 + b" HTTP/1.1\r\n\r\n", "request_head_too_large"),
    "long_request_line_not_yet_ended": (b"GET /" + b"x" * 64, "request_head_too_large"),
    "long_header": (b"GET / HTTP/1.1\r\nX: " + b"y" * 64 + b"\r\n\r\n", "request_head_too_large"),
    "long_header_not_yet_ended": (b"GET / HTTP/1.1\r\nX: " + b"y" * 64, "request_head_too_large"),
    "many_headers": (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 5 + b"\r\n", "request_head_too_large"),
}


@pytest.mark.parametrize(("data", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_head_is_refused_with_its_reason_and_no_echo(data: bytes, reason: str) -> None:
    verdict = check_head(data, LIMITS)
    assert isinstance(verdict, BadHead) and verdict.reason == reason
    assert "\n" not in verdict.message and "garbage" not in verdict.message


@pytest.mark.parametrize("cut", range(len(GOOD)))
def test_a_good_head_is_awaited_until_whole_however_it_is_cut(cut: int) -> None:
    assert check_head(GOOD[:cut], LIMITS) is None


@pytest.mark.parametrize(
    ("data", "head"),
    [
        (GOOD, Head(len(GOOD), 2)),
        (GOOD + b"{}GET / HTTP/1.1\r\n", Head(len(GOOD), 2)),  # its body, a pipelined head
        (b"\r\n" + GOOD, Head(len(GOOD) + 2, 2)),  # an empty line before it is ignored
        (b"GET / HTTP/1.0\r\n\r\n", Head(18, 0)),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 4 + b"\r\n", Head(42, 0)),
        (b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", Head(28, 0)),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Head(47, None)),
    ],
    ids=[
        "whole",
        "body_after",
        "leading_crlf",
        "http_1_0",
        "headers_at_the_cap",
        "utf8_value",
        "chunked",
    ],
)
def test_a_whole_good_head_is_handed_on_with_its_size_and_body(data: bytes, head: Head) -> None:
    assert check_head(data, LIMITS) == head
