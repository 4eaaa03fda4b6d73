"""A reply e-mail, built without I/O from values a stranger may have written.

The subject and the ids a reply carries come from the mail it answers, so they are hostile: an
encoded subject (``=?utf-8?q?hi=0D=0ABcc:_x@evil.test?=``) decodes to a line break, which the
``email`` library refuses with ``ValueError`` (or, folded elsewhere, would start a new header).
Every header value is cleaned here first, and whatever still cannot make a mail raises
``SendError(permanent=True)``: trying again can never help, and a reply that can never go out
must fail on its own instead of holding up the channel.

    >>> clean_header_text('hi\\r\\nBcc: x@evil.test')
    'hi Bcc: x@evil.test'
"""

from __future__ import annotations

import re
import unicodedata
from email.errors import MessageError
from email.message import EmailMessage

from ...models import OutboundFile
from ..base import SendError
from . import mailtext

MAX_SUBJECT = 200  # characters of a reply's subject; the rest of a longer one is cut
MAX_REFERENCES = 20  # ids in References: the root and the latest
MAX_FIRST_LINE = 78  # characters of a new mail's first line that make its subject
ADDRESS = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9-]+(\.[a-z0-9-]+)+")


def clean_header_text(value: str, limit: int = MAX_SUBJECT) -> str:
    """``value`` as one line of printable text: line breaks (``\\r``, ``\\n`` and Unicode's,
    which ``str.splitlines`` also splits on), control and other invisible characters become
    spaces, runs of spaces one, and it is cut to ``limit`` characters."""
    out = []
    for char in value:
        category = unicodedata.category(char)
        # Cc control (CR, LF, NUL, VT, FF, NEL...), Zl/Zp line and paragraph separators,
        # Cs lone surrogates (undecodable bytes), Co/Cn private and unassigned
        out.append(" " if category in ("Cc", "Zl", "Zp", "Cs", "Co", "Cn") else char)
    return re.sub(r"\s+", " ", "".join(out)).strip()[:limit].strip()


def clean_ids(ids: list[str] | tuple[str, ...]) -> list[str]:
    """Only well-formed ``<id>`` values (no spaces, no line breaks, no brackets inside), each
    short enough for a header line."""
    kept: list[str] = []
    for value in ids:
        found = mailtext.message_ids(value)
        plain = value.isascii() and value.isprintable() and len(value) <= 900
        if plain and len(found) == 1 and found[0] == value:
            kept.append(value)
    return kept


def check_address(address: str) -> str:
    """The address, if it is one plain ASCII address a reply may go to; else a permanent
    ``SendError`` (no retry can make it deliverable)."""
    if not ADDRESS.fullmatch(address) or len(address) > 254:
        raise SendError(
            f"e-mail: {address[:80]!r} is not a plain address a reply can go to; "
            "the reply is given up",
            permanent=True,
        )
    return address


def build_reply(
    sender: str,
    to: str,
    text: str,
    message_id: str,
    date: str,
    original: tuple[str, str, tuple[str, ...]] | None,
    thread: str,
    attachment: OutboundFile | None = None,
) -> EmailMessage:
    """The reply to ``to``: threaded under ``original`` (its Message-ID, subject and
    References) when known, else under ``thread``; with ``attachment`` (its type, its name,
    base64) when given. Raises ``SendError(permanent=True)`` when no mail can be made of
    these values."""
    to = check_address(to)
    mail = EmailMessage()
    try:
        mail["From"] = sender
        mail["To"] = to
        parents = clean_ids([original[0]]) if original is not None else []
        if original is not None and parents:
            _, subject, references = original
            mail["Subject"] = mailtext.reply_subject(clean_header_text(subject))
            mail["In-Reply-To"] = parents[0]
            mail["References"] = " ".join([*clean_ids(references), parents[0]][-MAX_REFERENCES:])
        elif clean_ids([thread]):
            mail["Subject"] = "Re: your message"
            mail["References"] = thread
        else:  # a mail of our own (a card, a message to another chat): its first line says it
            first = next((line for line in text.splitlines() if line.strip()), "")
            mail["Subject"] = clean_header_text(first, MAX_FIRST_LINE) or "A message"
        mail["Message-ID"] = message_id
        mail["Date"] = date
        mail["Auto-Submitted"] = "auto-replied"  # RFC 3834: vacation responders stay quiet
        mail.set_content(text)
        if attachment is not None:
            maintype, _, subtype = attachment.media_type.partition("/")
            mail.add_attachment(
                attachment.data,
                maintype=maintype,
                subtype=subtype or "octet-stream",
                filename=clean_header_text(attachment.name, 255) or "file",
            )
        mail.as_bytes()  # whatever the generator refuses, it refuses now, not mid-SMTP
    except (ValueError, TypeError, MessageError) as exc:
        raise SendError(
            f"e-mail: the reply cannot be written as a mail ({type(exc).__name__}: {exc}); "
            "it is given up",
            permanent=True,
        ) from None
    return mail
