"""A reply's headers come from the mail it answers, which a stranger wrote: nothing in them may
break a header line, and a reply that can never be written fails permanently, at once."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest

from clawpen.channels.base import SendError
from clawpen.channels.email import EmailAdapter, EmailSettings
from clawpen.channels.email.mailreply import build_reply, clean_header_text
from clawpen.channels.email.mailtext import parse_bytes, read_mail
from clawpen.models import Address, OutboundMessage

AGENT, ALICE = "agent@example.net", "alice@example.com"
PARENT = "<1@example.com>"


@pytest.mark.parametrize(
    ("subject", "clean"),
    [
        ("plans", "plans"),
        ("hi\r\nBcc: mallory@evil.test", "hi Bcc: mallory@evil.test"),
        ("hi\nX-Injected: 1", "hi X-Injected: 1"),
        ("hi\rthere", "hi there"),
        ("a\x00b\x0bc\x0cd\x1ce\x85f", "a b c d e f"),  # NUL, VT, FF, FS, NEL
        ("one\u2028two\u2029three", "one two three"),  # Unicode's line and paragraph breaks
        ("  spaced \t out  ", "spaced out"),
        ("x" * 1000, "x" * 200),
        ("caf\u00e9 \u2615", "caf\u00e9 \u2615"),  # text stays text
    ],
)
def test_header_text_is_one_printable_line(subject: str, clean: str) -> None:
    assert clean_header_text(subject) == clean


def _reply(subject: str, references: tuple[str, ...] = (), parent: str = PARENT) -> bytes:
    mail = build_reply(
        sender=AGENT,
        to=ALICE,
        text="Noted.",
        message_id="<r@example.net>",
        date=formatdate(usegmt=True),
        original=(parent, subject, references),
        thread="",
    )
    return mail.as_bytes()


def _headers(raw: bytes) -> list[str]:
    head = raw.split(b"\n\n", 1)[0].decode()
    return [line.split(":", 1)[0] for line in head.splitlines() if not line[:1].isspace()]


@pytest.mark.parametrize(
    "subject",
    [
        "hi\r\nBcc: mallory@evil.test",
        "hi\nBcc: mallory@evil.test",
        "hi\u2028Bcc: mallory@evil.test",
        "hi\x85Bcc: mallory@evil.test",
    ],
)
def test_a_subject_that_decodes_to_a_line_break_gives_a_clean_reply(subject: str) -> None:
    raw = _reply(subject)
    assert "Bcc" not in _headers(raw)
    reply = parse_bytes(raw)
    assert reply["Subject"] == "Re: hi Bcc: mallory@evil.test"
    assert reply["To"] == ALICE and reply["In-Reply-To"] == PARENT


def test_an_encoded_subject_read_from_a_received_mail_is_cleaned_in_the_reply() -> None:
    received = read_mail(
        b"From: alice@example.com\r\nMessage-ID: <1@example.com>\r\n"
        b"Subject: =?utf-8?q?hi=0D=0ABcc:_mallory@evil.test?=\r\n\r\nbody\r\n"
    )
    assert received is not None and "\n" in received.subject  # what the attack relies on
    raw = _reply(received.subject, received.references, received.message_id)
    assert "Bcc" not in _headers(raw)
    assert parse_bytes(raw)["Subject"] == "Re: hi Bcc: mallory@evil.test"


def test_references_keep_only_well_formed_ids() -> None:
    raw = _reply("plans", references=("<0@example.com>", "<a\r\nBcc: x@evil.test>", "junk"))
    reply = parse_bytes(raw)
    assert reply["References"].split() == ["<0@example.com>", PARENT]
    assert "Bcc" not in _headers(raw)


def adapter(**extra: Any) -> EmailAdapter:
    settings = {
        "address": AGENT,
        "imap": {"host": "127.0.0.1", "port": 9},
        "smtp": {"host": "127.0.0.1", "port": 9},
        "username": AGENT,
        "password": "secret",
    }
    return EmailAdapter(EmailSettings.model_validate(settings | extra))


@pytest.mark.parametrize(
    "chat", ["alice@example.com\r\nBcc: mallory@evil.test", "not an address", "a@b@c.d", ""]
)
async def test_a_reply_to_a_malformed_address_fails_permanently_at_once(chat: str) -> None:
    with pytest.raises(SendError) as failed:
        await adapter().send(OutboundMessage(Address("email", chat, ""), "hi"))
    assert failed.value.permanent
    assert "given up" in str(failed.value)


async def test_a_reply_that_cannot_be_written_fails_permanently_without_a_round_trip() -> None:
    """(The From address is config; one the library refuses makes every reply unwritable.
    The SMTP port is closed: reaching it would be a transient failure instead.)"""
    with pytest.raises(SendError) as failed:
        await adapter(address="agent@example.net\nBcc: x@evil.test").send(
            OutboundMessage(Address("email", ALICE, ""), "hi")
        )
    assert failed.value.permanent


async def test_a_remembered_hostile_subject_never_makes_the_reply_raise_value_error() -> None:
    """The attack of issue 23: the subject decoded to CR/LF and the reply raised ValueError,
    a failure the outbox retried for ever. Now the reply is built; it fails here only at the
    closed SMTP port, as a transient SendError."""
    sender = adapter()
    sender._remember(PARENT, "hi\r\nBcc: mallory@evil.test", ())
    with pytest.raises(SendError) as failed:
        await sender.send(OutboundMessage(Address("email", ALICE, PARENT), "hi", reply_to=PARENT))
    assert not failed.value.permanent  # the connection was refused: that one may pass later
