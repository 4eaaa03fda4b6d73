"""A card's code replied by mail: whatever the sender's client wraps around it (the quoted
card, an attribution line, a signature, Outlook's header block, HTML), the text the core reads
is the code alone, which the core takes as the tap of the (authenticated) sender."""

from __future__ import annotations

import pytest

from clawpen.channels.base import with_reply_codes
from clawpen.channels.email.mailtext import read_mail
from clawpen.models import Address, Button, OutboundMessage

CODE = "al-7f3k9q2m"
CARD = with_reply_codes(
    OutboundMessage(
        Address("email", "alice@example.com"),
        "Approval needed: assistant wants to reach example.com:443\n"
        "Unanswered by 21:00 UTC: denied.",
        buttons=(
            Button("Allow once", "ok-7f3k9q2m"),
            Button("Allow this host from now on", CODE),
            Button("Deny", "no-7f3k9q2m"),
        ),
    )
).text
QUOTED = "\n".join(f"> {line}" if line else ">" for line in CARD.splitlines())
OUTLOOK_HTML = (
    '<html><body><div dir="ltr">al-7f3k9q2m</div><div><br></div>'
    '<div id="Signature"><p>Alice Example<br>ACME Corp</p></div>'
    '<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg" dir="ltr">'
    "<b>From:</b> assistant &lt;agent@example.net&gt;<br><b>Sent:</b> Monday, December 7, 2026"
    " 9:00 PM<br><b>To:</b> Alice<br><b>Subject:</b> Re: plans</div><div>"
    + CARD.replace("\n", "<br>")
    + "</div></body></html>"
)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        # Gmail, Apple Mail, Thunderbird: the code, an attribution line, the card quoted
        ("plain", f"{CODE}\n\nOn Mon, 7 Dec 2026 at 21:00, <agent@example.net> wrote:\n{QUOTED}\n"),
        (
            "plain",
            f"{CODE}\n\nOn Mon, 7 Dec 2026 at 21:00, assistant <agent@example.net>\n"
            f"wrote:\n\n{QUOTED}",
        ),
        # from a phone, the code first and a sign-off
        (
            "plain",
            f"  {CODE}  \n\nSent from my iPhone\n\n"
            f"> On 7 Dec 2026, at 21:00, agent wrote:\n{QUOTED}",
        ),
        # a signature, then Outlook's plain-text history
        ("plain", f"{CODE}\n-- \nAlice Example\n\n-----Original Message-----\nFrom: agent\n{CARD}"),
        # Outlook's header block without a separator line (an HTML reply made into text)
        (
            "plain",
            f"{CODE}\n\nFrom: assistant <agent@example.net>\nSent: Monday, December 7, 2026\n"
            f"To: Alice\nSubject: Re: plans\n\n{CARD}",
        ),
        ("html", f"<div>{CODE}</div><blockquote>{CARD.replace(chr(10), '<br>')}</blockquote>"),
        ("html", OUTLOOK_HTML),
    ],
)
def test_the_code_replied_above_the_quoted_card_is_read_as_the_code_alone(
    content_type: str, body: str
) -> None:
    headers = (
        "From: Alice <alice@example.com>\r\nTo: agent@example.net\r\nSubject: Re: plans\r\n"
        "Message-ID: <r1@example.com>\r\nIn-Reply-To: <card@example.net>\r\n"
        "References: <root@example.com> <card@example.net>\r\n"
        f"Content-Type: text/{content_type}; charset=utf-8\r\n"
    )
    mail = read_mail((headers + "\r\n" + body.replace("\n", "\r\n")).encode())
    assert mail is not None
    assert mail.text == CODE


def test_a_code_with_words_around_it_stays_as_written() -> None:
    """The core takes only a reply that is the code alone: "ok, al-7f3k9q2m thanks" is a
    message for the agent, not a decision, and is not trimmed into one."""
    raw = (
        "From: alice@example.com\r\nMessage-ID: <r2@example.com>\r\n"
        "In-Reply-To: <card@example.net>\r\n\r\n"
        f"sure, {CODE} thanks\r\n\r\nOn Mon, agent wrote:\r\n{QUOTED}\r\n"
    ).encode()
    mail = read_mail(raw)
    assert mail is not None and mail.text == f"sure, {CODE} thanks"
