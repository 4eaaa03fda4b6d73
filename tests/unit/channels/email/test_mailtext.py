"""E-mail decided without I/O: whose mail it is, what it says, where it threads."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from clawpen.channels.base import MAX_ATTACHMENT_BYTES
from clawpen.channels.email.mailtext import (
    html_to_text,
    parse_auth_results,
    read_mail,
    reply_subject,
    sender_address,
    short_id,
    trim_reply,
    verdict,
)

ALICE = "alice@example.com"
FORGED = "evil.test; dkim=pass header.d=example.com"  # names a server that is not ours


@pytest.mark.parametrize(
    ("headers", "authserv_id", "trusted"),
    [
        (["mx.example.net; dkim=pass header.d=example.com"], None, True),
        (["mx.example.net; dkim=pass header.i=@example.com"], None, True),
        (["mx.example.net; dkim=pass header.i=alice@Example.COM"], None, True),
        (["mx.example.net; spf=pass; dmarc=pass (p=reject) header.from=example.com"], None, True),
        (["mx.example.net; dkim=pass (good sig) header.d=example.com header.s=k1"], None, True),
        (['mx.example.net; dkim=pass header.d="example.com"'], None, True),
        # a signature, but by another domain: anyone can sign their own mail
        (["mx.example.net; dkim=pass header.d=attacker.test"], None, False),
        (["mx.example.net; dkim=pass header.d=sub.example.com"], None, False),
        (["mx.example.net; dmarc=pass header.from=attacker.test"], None, False),
        (["mx.example.net; dkim=fail header.d=example.com; dmarc=fail header.from=example.com"],
         None, False),
        (["mx.example.net; spf=pass smtp.mailfrom=example.com"], None, False),  # SPF alone: no
        (["mx.example.net; none"], None, False),
        ([], None, False),
        (["garbage"], None, False),
        # the forger's header lies below the receiving server's: only the topmost counts
        (["mx.example.net; dkim=none", "mx.example.net; dkim=pass header.d=example.com"],
         None, False),
        # a comment hiding a verdict is not a verdict
        (["mx.example.net; dkim=fail (dkim=pass header.d=example.com) header.d=example.com"],
         None, False),
        # with authserv_id: only a header naming our server counts, wherever it is
        ([FORGED, "mx.example.net; dkim=pass header.d=example.com"], "mx.example.net", True),
        ([FORGED, "mx.example.net; dkim=fail header.d=example.com"], "MX.example.net", False),
        (["evil.test; dkim=pass header.d=example.com"], "mx.example.net", False),
        (["mx.example.net 1; dkim=pass header.d=example.com"], "mx.example.net", True),
    ],
)  # fmt: skip
def test_only_the_receiving_servers_dkim_or_dmarc_pass_for_the_from_domain_counts(
    headers: list[str], authserv_id: str | None, trusted: bool
) -> None:
    assert verdict(headers, ALICE, authserv_id) is trusted


def test_authentication_results_are_parsed_with_comments_and_properties() -> None:
    parsed = parse_auth_results(
        "mx.google.com;\r\n dkim=pass header.i=@example.com header.s=20230601 header.b=AbC;"
        " spf=pass (google.com: domain of a@example.com) smtp.mailfrom=a@example.com;"
        " dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com"
    )
    assert parsed is not None
    assert parsed.authserv_id == "mx.google.com"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"),
        ("spf", "pass"),
        ("dmarc", "pass"),
    ]
    assert parsed.results[2].properties == {"header.from": "example.com"}


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hello</p><p>World</p>", "Hello\n\nWorld"),
        ("Line one<br>Line two", "Line one\nLine two"),
        ("<ul><li>eggs</li><li>milk</li></ul>", "- eggs\n\n- milk"),
        ("<style>p {color: red}</style><script>alert(1)</script><p>ok</p>", "ok"),
        ("<p>Fish &amp; chips &lt;3</p>", "Fish & chips <3"),
        ('<a href="https://example.com/x">the page</a>', "the page (https://example.com/x)"),
        ("<p>Yes.</p><blockquote>On Monday you wrote: no</blockquote>", "Yes."),
        ("<div>  lots   of\n  space </div>", "lots of space"),
        ("<p>unclosed <b>tags", "unclosed tags"),
    ],
)
def test_html_only_mail_becomes_readable_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        ("Sounds good.\n\n> Shall we meet?\n> Bob", "Sounds good."),
        ("Yes!\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@example.com> wrote:\n> Lunch?", "Yes!"),
        ("Yes!\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@example.com>\nwrote:\n> Lunch?", "Yes!"),
        ("Oui\n\nLe lun. 1 janv. 2024, Bob a écrit :\n> Déjeuner ?", "Oui"),
        ("Thanks\n-- \nAlice Example\nACME Corp", "Thanks"),
        ("Thanks\n\nSent from my iPhone", "Thanks"),
        ("See below\n\n-----Original Message-----\nFrom: Bob\nSubject: x", "See below"),
        ("Here\n________________________________\nFrom: Bob", "Here"),
        ("first\n> quoted\nmiddle answer\n> more\nlast", "first\nmiddle answer\nlast"),
        ("On second thought, no.", "On second thought, no."),  # not an attribution line
        ("> only a quote", "> only a quote"),  # nothing would remain: keep it all
    ],
)
def test_quoted_history_and_signatures_are_trimmed(body: str, kept: str) -> None:
    assert trim_reply(body) == kept


@pytest.mark.parametrize(
    ("header", "address"),
    [
        ("Alice <Alice@Example.COM>", "alice@example.com"),
        ("alice@example.com", "alice@example.com"),
        ('"Bob, via alice@example.com" <bob@example.org>', "bob@example.org"),
        ("a@example.com, b@example.com", None),  # two senders: neither is the one
        ("", None),
        ("not an address", None),
    ],
)
def test_the_sender_is_the_one_from_address(header: str, address: str | None) -> None:
    assert sender_address(header) == address


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("lunch", "Re: lunch"),
        ("Re: lunch", "Re: lunch"),
        ("RE: AW: Fwd: x", "Re: x"),
        ("", "Re: your message"),
    ],
)
def test_a_reply_subject_says_re_once(subject: str, reply: str) -> None:
    assert reply_subject(subject) == reply


def test_ids_too_long_for_the_core_are_hashed_and_stay_distinct() -> None:
    long_a, long_b = "<" + "a" * 300 + "@x>", "<" + "b" * 300 + "@x>"
    assert short_id("<short@x>") == "<short@x>"
    assert len(short_id(long_a)) <= 256
    assert short_id(long_a) != short_id(long_b)


def _mail(headers: str, body: str) -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


def test_a_reply_threads_under_its_root_and_keeps_only_the_new_text() -> None:
    raw = _mail(
        """
From: Alice <alice@example.com>
To: agent@example.net
Subject: Re: plans
Message-ID: <3@example.com>
In-Reply-To: <2@example.net>
References: <1@example.com> <2@example.net>
Date: Mon, 01 Jan 2024 10:00:00 +0000
Authentication-Results: mx.example.net; dkim=pass header.d=example.com
""",
        "Friday works.\r\n\r\nOn Sunday, agent wrote:\r\n> How about Friday?\r\n",
    )
    mail = read_mail(raw)
    assert mail is not None
    assert (mail.message_id, mail.thread) == ("<3@example.com>", "<1@example.com>")
    assert mail.references == ("<1@example.com>", "<2@example.net>")
    assert mail.text == "Friday works."
    assert mail.sender == "alice@example.com"
    assert mail.received_at == 1704103200.0
    assert verdict(list(mail.auth_headers), mail.sender)


def test_a_new_mail_starts_its_own_thread_and_the_agent_reads_its_subject() -> None:
    mail = read_mail(
        _mail("From: alice@example.com\nSubject: Call the plumber\nMessage-ID: <9@x.com>", "asap")
    )
    assert mail is not None
    assert mail.thread == "<9@x.com>"
    assert mail.text == "Subject: Call the plumber\n\nasap"


def test_html_only_mail_and_attachments_and_a_file_too_large() -> None:
    big = b"x" * (MAX_ATTACHMENT_BYTES + 1)
    png = b"\x89PNG\r\n\x1a\nfake"
    raw = _mail(
        """
From: alice@example.com
Message-ID: <10@x.com>
In-Reply-To: <1@x.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=BOUND
""",
        "--BOUND\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Look &amp; see</p>\r\n"
        "--BOUND\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=a.png\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(png).decode()
        + "\r\n--BOUND\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64"
        "\r\n\r\n" + base64.encodebytes(big).decode().replace("\n", "\r\n") + "\r\n--BOUND--\r\n",
    )
    mail = read_mail(raw)
    assert mail is not None
    assert [(a.name, a.media_type, a.data) for a in mail.attachments] == [
        ("a.png", "image/png", png)
    ]
    assert mail.text.startswith("Look & see\n[big.bin: not downloaded, 20.0 MB")


@pytest.mark.parametrize(
    "headers",
    [
        "From: MAILER-DAEMON@example.com\nMessage-ID: <b@x>",
        "From: alice@example.com\nAuto-Submitted: auto-replied\nMessage-ID: <b@x>",
        "From: list@example.com\nPrecedence: bulk\nMessage-ID: <b@x>",
    ],
)
def test_bounces_and_auto_replies_are_marked_so_they_are_never_answered(headers: str) -> None:
    mail = read_mail(_mail(headers, "away"))
    assert mail is not None and mail.automatic


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"From: <<<>>>\r\nMessage-ID: <a@b>\r\n"
        b"Content-Type: text/plain; charset=x-unknown\r\n\r\n\xff",
        b"From: a@b.c\r\nMessage-ID: <a@b>\r\nContent-Type: multipart/mixed\r\n\r\nno boundary",
    ],
)
def test_hostile_bytes_parse_or_are_refused_without_raising(raw: bytes) -> None:
    mail = read_mail(raw)
    assert mail is None or isinstance(mail.text, str)


OURS = "mx.example.net; dkim=pass header.d=example.com"
RECEIVED = "Received: from mail.example.com by mx.example.net; Mon, 1 Jan 2024 10:00:00 +0000"


@pytest.mark.parametrize(
    ("headers", "trusted"),
    [
        # our server prepended its verdict above the Received line it wrote: it counts
        ([f"Authentication-Results: {OURS}", RECEIVED], True),
        # a sender's own verdict lies below every Received line, whatever server it names
        ([RECEIVED, f"Authentication-Results: {OURS}"], False),
        ([RECEIVED, f"Authentication-Results: {FORGED}"], False),
        # ...even below a Received line it wrote itself
        ([RECEIVED, f"Authentication-Results: {OURS}", "Received: from forged"], False),
        # ours says fail; a forged pass below it changes nothing
        (["Authentication-Results: mx.example.net; dkim=fail header.d=example.com", RECEIVED,
          f"Authentication-Results: {OURS}"], False),
        # no Received line at all: it came through no server, so nothing in it is ours
        ([f"Authentication-Results: {OURS}"], False),
    ],
)  # fmt: skip
def test_without_authserv_id_only_a_verdict_above_the_topmost_received_counts(
    headers: list[str], trusted: bool
) -> None:
    raw = _mail("\n".join([*headers, "From: alice@example.com", "Message-ID: <f@x.com>"]), "hi")
    mail = read_mail(raw)
    assert mail is not None and mail.sender is not None
    assert verdict(list(mail.auth_headers), mail.sender, None, mail.auth_above_received) is trusted


def test_with_authserv_id_the_first_header_carrying_it_counts_wherever_it_sits() -> None:
    raw = _mail(f"{RECEIVED}\nAuthentication-Results: {OURS}\nFrom: {ALICE}\nMessage-ID: <g@x>", "")
    mail = read_mail(raw)
    assert mail is not None and mail.sender is not None
    assert verdict(list(mail.auth_headers), mail.sender, "mx.example.net", 0)


def test_an_attachment_over_the_file_limit_is_named_without_being_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from email.message import EmailMessage

    encoded = base64.encodebytes(b"y" * (MAX_ATTACHMENT_BYTES + 10)).decode()
    raw = (
        "From: alice@example.com\r\nMessage-ID: <h@x.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "see file\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: "
        "attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded.replace("\n", "\r\n")
        + "\r\n--B--\r\n"
    ).encode()
    decode = EmailMessage.get_payload

    def get_payload(self: EmailMessage, i: Any = None, decode_: bool = False, **kw: Any) -> Any:
        assert not (kw.get("decode") or decode_) or self.get_filename() != "big.bin"
        return decode(self, i, **kw)

    monkeypatch.setattr(EmailMessage, "get_payload", get_payload)
    mail = read_mail(raw)
    assert mail is not None and mail.attachments == ()
    assert "[big.bin: not downloaded, 20.0 MB is over the 20 MB limit]" in mail.text


def test_a_mail_too_large_to_read_is_described_to_the_agent() -> None:
    from clawpen.channels.email.mailtext import too_large_note

    note = too_large_note(36 * 1024 * 1024 + 1, 25 * 1024 * 1024)
    assert "36.0 MB" in note and "25 MB limit" in note
