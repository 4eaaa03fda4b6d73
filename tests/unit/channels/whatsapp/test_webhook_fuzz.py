"""Property-based fuzzing of the WhatsApp webhook endpoint: whatever arrives, the server answers
it with no 5xx, never crashes, and acts only on what Meta signed.

The server runs in this process on loopback, with the fake Graph API behind it for media; each
case is one real HTTP request. Cases are bodies (bytes, any JSON, Meta's shape with parts
replaced or removed, cut short), signatures (right, wrong, missing, malformed), headers, methods,
paths and handshake queries; and raw bytes on the socket, below HTTP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawpen.channels.whatsapp.events import Malformed, parse_webhook
from tests.fakes.fake_whatsapp import FakeWhatsApp

from .support import Core, running_adapter

ALICE = "15551234567"
PATH = "/webhooks/whatsapp"
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # no .hypothesis directory in the checkout
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

KINDS = ["text", "image", "document", "audio", "video", "sticker", "reaction", "location"]
KINDS += ["interactive", "button", "contacts", "unsupported", "system", "order"]


def _message(kind: str, wamid: str, media_id: str) -> dict[str, Any]:
    content: dict[str, Any] = {
        "text": {"body": "hello"},
        "reaction": {"message_id": "wamid.x", "emoji": "\N{THUMBS UP SIGN}"},
        "location": {"latitude": 52.5, "longitude": 13.4, "name": "Berlin"},
        "interactive": {"type": "button_reply", "button_reply": {"id": "1", "title": "Yes"}},
        "button": {"text": "Stop", "payload": "stop"},
    }.get(kind, {"id": media_id, "mime_type": "image/png", "caption": "c", "filename": "f.png"})
    return {"from": ALICE, "id": wamid, "timestamp": "1700000000", "type": kind, kind: content}


@st.composite
def meta_payloads(draw: st.DrawFn, media_id: str) -> dict[str, Any]:
    """Meta's shape, with parts replaced by anything, or removed."""
    kinds = draw(st.permutations(KINDS))[: draw(st.integers(1, 4))]  # every kind as often
    ids = [draw(st.integers(0, 10**6)) for _ in kinds]  # the spoiling varies them enough
    messages = [
        _message(kind, f"wamid.{wamid}", draw(st.sampled_from([media_id, "404404"])))
        for kind, wamid in zip(kinds, ids, strict=True)
    ]
    statuses = [
        {"id": "wamid.s", "status": s, "recipient_id": ALICE, "timestamp": "1700000000"}
        | (
            {"errors": [{"code": 131047, "title": "Re-engagement message"}]}
            if s == "failed"
            else {}
        )
        for s in draw(
            st.lists(st.sampled_from(["sent", "delivered", "read", "failed"]), max_size=2)
        )
    ]
    payload: dict[str, Any] = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "106540352242922"},
                            "contacts": [{"profile": {"name": "A"}, "wa_id": ALICE}],
                            "messages": messages,
                            "statuses": statuses,
                        },
                    }
                ],
            }
        ],
    }
    return _spoil(draw, payload)  # type: ignore[no-any-return]


def _spoil(draw: st.DrawFn, node: Any, depth: int = 0) -> Any:
    """``node`` with some of its parts replaced by anything or left out: the envelope and a
    message's header rarely (so the parser gets past them), its content often."""
    if isinstance(node, dict):
        spoiled = {}
        odds = 3 if depth > 4 else 30  # a message's content; its envelope and header
        for key, child in node.items():
            fate = draw(st.integers(0, odds - 1))
            if fate == 0:
                spoiled[key] = draw(json_values)
            elif fate != 1:
                spoiled[key] = _spoil(draw, child, depth + 1)
        return spoiled
    if isinstance(node, list):
        return [_spoil(draw, child, depth) for child in node]
    return node


@st.composite
def requests(draw: st.DrawFn, media_id: str) -> dict[str, Any]:
    shaped = meta_payloads(media_id).map(lambda p: json.dumps(p).encode())
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            json_values.map(lambda v: json.dumps(v).encode()),
            shaped,
            shaped,
            shaped,
            st.tuples(shaped, st.integers(1, 40)).map(lambda cut: cut[0][: -cut[1]]),
        )
    )
    signature = draw(st.sampled_from(["right", "right", "right", "none", "wrong", "garbage"]))
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
    return {
        "method": draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"])),
        "path": draw(st.sampled_from([PATH] * 9 + ["/", "/webhooks/whatsapp/x"])),
        "body": body,
        "signature": signature,
        "garbage": draw(header_text),
        "content_type": draw(st.sampled_from(["application/json", "text/plain", ""]) | header_text),
        "query": draw(
            st.dictionaries(
                st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
                st.text(max_size=30),
                max_size=4,
            )
        ),
    }


def test_the_webhook_answers_anything_without_a_5xx_and_acts_only_on_signed_posts() -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_fuzz(loop))
    finally:
        loop.close()


async def _fuzz(loop: asyncio.AbstractEventLoop) -> None:
    meta = FakeWhatsApp()
    await meta.start()
    core = Core()
    media_id = meta.add_media(b"\x89PNG fuzz", "image/png")
    try:
        async with running_adapter(meta, core), aiohttp.ClientSession() as http:
            base = meta.webhook_url.removesuffix(PATH)
            answers: list[int] = []

            async def one(case: dict[str, Any]) -> None:
                body: bytes = case["body"]
                headers = {"Content-Type": case["content_type"]} if case["content_type"] else {}
                if case["signature"] == "right":
                    headers["X-Hub-Signature-256"] = meta.sign(body)
                elif case["signature"] == "wrong":
                    headers["X-Hub-Signature-256"] = meta.sign(body + b"!")
                elif case["signature"] == "garbage":
                    headers["X-Hub-Signature-256"] = case["garbage"]
                offered = len(core.offered)
                async with http.request(
                    case["method"],
                    base + case["path"],
                    data=body,
                    params=case["query"],
                    headers=headers,
                ) as response:
                    status = response.status
                answers.append(status)
                assert status < 500, case
                if case["path"] != PATH:
                    assert status == 404
                elif case["method"] == "POST" and case["signature"] != "right":
                    assert status == 401, case
                    assert len(core.offered) == offered  # nothing unsigned reached the core
                elif case["method"] == "POST":
                    assert status in (200, 400), case

            @FUZZ
            @given(case=requests(media_id))
            def check(case: dict[str, Any]) -> None:
                asyncio.run_coroutine_threadsafe(one(case), loop).result(timeout=30)

            await asyncio.to_thread(check)
            assert len(answers) >= 1000
            assert answers.count(200) >= 100  # the shape fuzzing reached the core, too
            # and the server is still there for Meta
            wamid = meta.user_says(ALICE, "still there?")
            assert (await meta.wait_for_delivery(wamid))[-1] == 200
    finally:
        await meta.close()


@settings(max_examples=1500, deadline=None, database=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        meta_payloads("1000").map(lambda p: json.dumps(p).encode()),
    )
)
def test_parsing_a_webhook_either_reads_it_or_says_it_is_malformed(body: bytes) -> None:
    try:
        webhook = parse_webhook(body, "106540352242922")
    except Malformed:
        return
    for message in webhook.messages:  # what the core's wire takes, or the adapter would die
        for value in (message.wa_id, message.wamid, message.reply_to):
            assert len(value) <= 256 and value.isascii()
        assert len(message.text) <= 200_000
        message.text.encode("utf-8")  # no lone surrogates: raises if there is one
    for tap in webhook.taps:  # the wire's limits for a tap, or the core would end the adapter
        for value in (tap.wa_id, tap.wamid, tap.card):
            assert len(value) <= 256 and value.isascii()
        assert tap.wa_id and 1 <= len(tap.data.encode("utf-8")) <= 64
    for status in webhook.statuses:
        assert status.wamid and status.status
        status.error.encode("utf-8")


def test_raw_bytes_on_the_socket_are_answered_with_no_5xx() -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_raw(loop))
    finally:
        loop.close()


async def _raw(loop: asyncio.AbstractEventLoop) -> None:
    meta = FakeWhatsApp()
    await meta.start()
    try:
        async with running_adapter(meta, Core()):
            host, port = meta.webhook_url.removeprefix("http://").split("/")[0].split(":")

            async def one(data: bytes) -> None:
                reader, writer = await asyncio.open_connection(host, int(port))
                try:
                    writer.write(data)
                    await writer.drain()
                    writer.write_eof()
                    async with asyncio.timeout(10):
                        line = await reader.readline()
                finally:
                    writer.close()
                words = line.split()  # "HTTP/1.1 400 Bad Request", or nothing: it hung up
                assert len(words) < 2 or not words[1].startswith(b"5"), line

            head = st.sampled_from(
                [b"POST " + PATH.encode() + b" HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n", b""]
            )
            lines = st.lists(
                st.one_of(
                    st.binary(max_size=60),
                    st.sampled_from(
                        [
                            b"Content-Length: 99999999999",
                            b"Content-Length: -1",
                            b"Transfer-Encoding: chunked",
                            b"Host: x",
                            b"X-Hub-Signature-256: sha256=00",
                        ]
                    ),
                ),
                max_size=5,
            )

            @settings(max_examples=500, deadline=None, database=None)
            @given(first=head, headers=lines, body=st.binary(max_size=100))
            def check(first: bytes, headers: list[bytes], body: bytes) -> None:
                data = first + b"\r\n".join(headers) + b"\r\n\r\n" + body
                asyncio.run_coroutine_threadsafe(one(data), loop).result(timeout=30)

            await asyncio.to_thread(check)
            wamid = meta.user_says(ALICE, "still there?")
            assert (await meta.wait_for_delivery(wamid))[-1] == 200
    finally:
        await meta.close()
