"""E-mail, decided without I/O: who really sent a message, what it says, where it threads.

Every function here is a pure function of the message's bytes (or its header values), so the
tests are tables. ``email.py`` does the IMAP and SMTP around them.

    >>> verdict(['mx.example.com; dkim=pass header.d=example.com'], 'alice@example.com')
    True
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import Parser
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

from ...models import Attachment
from ..base import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_TOTAL,
    skipped_attachment_note,
)

MAX_ID = 256  # the core's longest platform, chat or thread id

# -- Authentication-Results (RFC 8601) ----------------------------------------------------------


@dataclass(frozen=True)
class AuthResult:
    method: str  # "dkim", "dmarc", "spf", ...
    result: str  # "pass", "fail", "none", ...
    properties: dict[str, str] = field(default_factory=dict)  # "header.d" -> "example.com"


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str
    results: tuple[AuthResult, ...]


def _strip_comments(value: str) -> str:
    """Drop RFC 5322 comments, ``(like this (nested))``, outside quoted strings."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            out.append(char)
            quoted = char != '"'
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def parse_auth_results(value: str) -> AuthResults | None:
    """One ``Authentication-Results`` header value, or None when it does not parse.

    >>> parse_auth_results('mx.example.com; dkim=pass (ok) header.d=Example.COM').results[0]
    AuthResult(method='dkim', result='pass', properties={'header.d': 'example.com'})
    """
    parts = [part.strip() for part in _strip_comments(value).split(";")]
    head = parts[0].split()
    if not head:
        return None
    results = []
    for part in parts[1:]:
        tokens = part.split()
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or garbage: no result to read
        method, result = tokens[0].split("=", 1)
        properties = {}
        for token in tokens[1:]:
            key, sep, prop = token.partition("=")
            if sep:
                properties[key.lower()] = prop.strip('"').lower()
        results.append(AuthResult(method.split("/")[0].lower(), result.lower(), properties))
    return AuthResults(head[0].lower(), tuple(results))


def _domain(value: str) -> str:
    return value.rpartition("@")[2].strip().rstrip(".").lower()


def verdict(
    auth_headers: list[str],
    sender: str,
    authserv_id: str | None = None,
    above_received: int | None = None,
) -> bool:
    """Did the receiving server vouch for ``sender``'s domain? ``auth_headers`` are the
    message's Authentication-Results values, topmost first; ``above_received`` says how many of
    them sit above its topmost ``Received`` line (None: the message has none).

    Anyone can write an Authentication-Results header into the mail they send; what tells our
    server's from theirs is where it sits. Every server on the way prepends a ``Received``
    line, so a sender's own headers always lie below them all, whatever they say.

    - Without ``authserv_id``, only a header above the topmost ``Received`` counts (one our
      receiving server added as it delivered), and of those the topmost. A server that writes
      its verdict below a ``Received`` line of its own (Gmail does) needs ``authserv_id``.
    - With ``authserv_id``, the first header carrying that id counts (RFC 8601 section 5: the
      receiving server removes or renames any that claims its id, so the first is its own).

    DKIM counts when it passed for the From domain itself (``header.d``, or the domain of
    ``header.i``); DMARC when it passed for ``header.from`` = that domain.
    """
    wanted = authserv_id.lower() if authserv_id else None
    if wanted is None and above_received is not None:
        auth_headers = auth_headers[:above_received]
    chosen: AuthResults | None = None
    for value in auth_headers:
        parsed = parse_auth_results(value)
        if wanted is None:
            chosen = parsed
            break
        if parsed is not None and parsed.authserv_id == wanted:
            chosen = parsed
            break
    if chosen is None:
        return False
    domain = _domain(sender)
    for result in chosen.results:
        if result.result != "pass":
            continue
        props = result.properties
        if result.method == "dkim" and domain in (
            props.get("header.d"),
            _domain(props["header.i"]) if "header.i" in props else None,
        ):
            return True
        if result.method == "dmarc" and props.get("header.from") == domain:
            return True
    return False


# -- addresses and ids --------------------------------------------------------------------------


def sender_address(from_header: str) -> str | None:
    """The one address in From, lower-cased; None for none, several, or a malformed one."""
    addresses = [addr for _, addr in getaddresses([from_header]) if addr]
    if len(addresses) != 1:
        return None
    address = addresses[0].strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        return None
    return address


def message_ids(value: str | None) -> list[str]:
    """The ``<...>`` ids in a Message-ID, In-Reply-To or References value, in order."""
    return re.findall(r"<[^<>\s]+>", value or "")


def short_id(message_id: str) -> str:
    """An id the core can hold (at most 256 characters): longer ones are hashed."""
    if len(message_id) <= MAX_ID:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def reply_subject(subject: str) -> str:
    """``Re: `` once, however many the original had.

    >>> reply_subject('RE: Re: lunch')
    'Re: lunch'
    """
    stripped = re.sub(r"^\s*((re|aw|sv|fw|fwd)\s*:\s*)+", "", subject, flags=re.IGNORECASE)
    return f"Re: {stripped.strip()}" if stripped.strip() else "Re: your message"


def is_automatic(message: EmailMessage) -> bool:
    """Bounces, vacation replies and lists: answering those starts mail loops."""
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    if auto and auto != "no":
        return True
    if str(message.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list"):
        return True
    sender = str(message.get("From", "")).lower()
    return "mailer-daemon@" in sender or str(message.get("Return-Path", "")).strip() == "<>"


# -- text ---------------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "section", "article", "header", "footer",
}  # fmt: skip
_HIDDEN_TAGS = {"script", "style", "head", "title", "template"}
_VOID_TAGS = {"br", "hr", "img", "input", "meta", "link", "wbr", "col", "area", "base"}


# what mail clients mark as the signature (left out) and as the start of the quoted history
# (left out, and all after it, as trim_reply does after "On ... wrote:"): Gmail, Outlook,
# Thunderbird, Apple Mail, Yahoo
_SIGNATURE_MARKS = re.compile(r"\b(gmail_signature|signature|moz-signature)\b", re.IGNORECASE)
_HISTORY_MARKS = re.compile(
    r"\b(gmail_quote|divRplyFwdMsg|moz-cite-prefix|AppleOriginalContents|yahoo_quoted)\b",
    re.IGNORECASE,
)


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.quoted = 0
        self.skipping = ""  # the tag of a signature's element being left out
        self.skip_depth = 0
        self.history = False  # past the start of the quoted history: nothing more is read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skipping:
            self.skip_depth += tag == self.skipping
            return
        marks = " ".join(value or "" for key, value in attrs if key in ("id", "class"))
        if marks and _HISTORY_MARKS.search(marks):
            self.history = True
        if self.history:
            return
        if marks and _SIGNATURE_MARKS.search(marks) and tag not in _VOID_TAGS:
            self.skipping, self.skip_depth = tag, 1
            self.parts.append("\n")
            return
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "blockquote":
            self.quoted += 1  # quoted history: trimmed like "> " lines
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._href = dict(attrs).get("href") or ""

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping:
                self.skip_depth -= 1
                if not self.skip_depth:
                    self.skipping = ""
            return
        if tag in _HIDDEN_TAGS and self.hidden:
            self.hidden -= 1
        elif tag == "blockquote" and self.quoted:
            self.quoted -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "a" and getattr(self, "_href", "").startswith(("http://", "https://")):
            self.parts.append(f" ({self._href})")
            self._href = ""

    def handle_data(self, data: str) -> None:
        if not self.hidden and not self.quoted and not self.skipping and not self.history:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body: paragraphs and line breaks kept, scripts, styles and
    quoted ``<blockquote>`` history dropped, links shown with their address."""
    parser = _TextOfHtml()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser copes with nearly anything; never let a body cost the mail
        return html.unescape(re.sub(r"<[^>]*>", " ", markup)).strip()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_ATTRIBUTION = re.compile(
    r"^(on\b.*\bwrote:|le\b.*\ba écrit\s?:|am\b.*\bschrieb\b.*:|el\b.*\bescribió:)\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^(on|le|am|el)\s.*\S", re.IGNORECASE)
_FORWARD_MARKERS = re.compile(
    r"^(-{2,}\s*original message\s*-{2,}|_{10,}|-{2,}\s*forwarded message\s*-{2,})\s*$",
    re.IGNORECASE,
)
# Outlook's history starts with a header block, "From: ..." then "Sent: ..." (or "Date:")
_HEADER_BLOCK_FROM = re.compile(r"^\**(from|von|de)\**:\s*\S", re.IGNORECASE)
_HEADER_BLOCK_NEXT = re.compile(
    r"^\**(sent|date|gesendet|datum|envoyé|enviado)\**:\s*\S", re.IGNORECASE
)
_SIGN_OFFS = re.compile(
    r"^(sent from my \w+.*|get outlook for \w+.*|sent from (mail|yahoo mail|outlook) for .*)$",
    re.IGNORECASE,
)


def trim_reply(text: str) -> str:
    """What the sender wrote in this message: quoted history (``> `` lines, an "On ... wrote:"
    block and everything after it, Outlook's "Original Message" or its "From:"/"Sent:" header
    block) and the signature (after a
    ``-- `` line, "Sent from my iPhone") are cut. Returns the text unchanged if nothing would
    remain."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        bare = line.strip()
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if _ATTRIBUTION.match(bare):
            break
        wrapped = following.lower().endswith("wrote:") and len(bare) + len(following) < 300
        if _ATTRIBUTION_START.match(bare) and wrapped:
            break  # "On Mon, 1 Jan 2024, Alice <alice@example.com>\nwrote:"
        if _FORWARD_MARKERS.match(bare) or line in ("-- ", "--"):
            break
        if _HEADER_BLOCK_FROM.match(bare) and any(
            _HEADER_BLOCK_NEXT.match(after.strip()) for after in lines[index + 1 : index + 3]
        ):
            break  # "From: Bob <bob@example.com>" / "Sent: Monday, ..." (Outlook)
        if bare.startswith(">"):
            continue
        kept.append(line.rstrip())
    while kept and (not kept[-1].strip() or _SIGN_OFFS.match(kept[-1].strip())):
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    trimmed = "\n".join(kept)
    return trimmed if trimmed.strip() else text.strip()


# -- a whole message ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """What the adapter needs of one received message."""

    message_id: str  # the full <id>
    sender: str | None  # the From address, lower-cased; None when there is not exactly one
    subject: str
    thread: str  # the root's <id> (first of References), else its own
    references: tuple[str, ...]  # References, then In-Reply-To if missing there
    text: str  # what the agent reads: trimmed, HTML turned into text
    attachments: tuple[Attachment, ...]
    auth_headers: tuple[str, ...]  # Authentication-Results values, topmost first
    auth_above_received: int  # how many of them sit above the topmost Received line
    automatic: bool  # a bounce, vacation reply or list mail: never answered
    received_at: float | None  # from Date, when it parses


def parse_bytes(raw: bytes) -> EmailMessage:
    """``BytesParser.parsebytes``, fed in pieces: that one copies the whole mail into a
    ``StringIO`` at four bytes a character (a 24 MB mail took 160 MB; read this way, 40).
    ``newline=""`` keeps line endings as they came, as ``parsebytes`` does."""
    text = io.TextIOWrapper(io.BytesIO(raw), encoding="ascii", errors="surrogateescape", newline="")
    message = Parser(policy=policy.default).parse(text)
    assert isinstance(message, EmailMessage)
    return message


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a header the parser cannot make sense of reads as absent
        return ""
    return str(value) if value is not None else ""


def _raw_headers(message: EmailMessage, name: str) -> list[str]:
    """All values of ``name``, in order, without the parser's interpretation (which can throw
    on hostile input)."""
    return [
        re.sub(r"\s+", " ", str(value))
        for key, value in message.raw_items()
        if key.lower() == name.lower()
    ]


def _above_received(message: EmailMessage, name: str) -> int:
    """How many ``name`` headers come before the first ``Received``. None without one: such a
    message came through no server, so no verdict in it was written by ours."""
    count = 0
    for key, _ in message.raw_items():
        if key.lower() == "received":
            return count
        count += key.lower() == name.lower()
    return 0


def _body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except Exception:  # an unknown charset: decode what we can
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    return html_to_text(content) if part.get_content_subtype() == "html" else content


def _base64_size(part: EmailMessage) -> int | None:
    """The decoded size of a base64 part, counted without decoding it (None for others)."""
    encoded = part.get_payload()
    if part.get("Content-Transfer-Encoding", "").strip().lower() != "base64":
        return None
    if not isinstance(encoded, str):
        return None
    return (len(encoded) - sum(encoded.count(c) for c in "\r\n \t")) * 3 // 4


def _attachments(message: EmailMessage) -> tuple[tuple[Attachment, ...], list[str]]:
    files: list[Attachment] = []
    notes: list[str] = []
    total = 0
    for part in message.iter_attachments():
        if part.is_multipart():
            continue
        name = part.get_filename() or f"attachment-{len(files) + len(notes) + 1}"
        size = _base64_size(part)
        if size is not None and size > MAX_ATTACHMENT_BYTES + 3:  # too large: never decoded
            notes.append(skipped_attachment_note(name, size))
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        if (
            len(data) > MAX_ATTACHMENT_BYTES
            or total + len(data) > MAX_ATTACHMENTS_TOTAL
            or len(files) >= MAX_ATTACHMENTS
        ):
            notes.append(skipped_attachment_note(name, len(data)))
            continue
        total += len(data)
        files.append(Attachment(name=name[:255], media_type=part.get_content_type(), data=data))
    return tuple(files), notes


def too_large_note(size: int, limit: int) -> str:
    """What the agent reads instead of a mail too large to read: enough to tell the sender."""
    megabytes = size / (1024 * 1024)
    cap = limit // (1024 * 1024)
    return (
        f"[this mail was not read: at {megabytes:.1f} MB it is over the {cap} MB limit for "
        "one mail; only its sender and subject are known. Ask for it in smaller parts.]"
    )


def read_mail(raw: bytes) -> Mail | None:
    """Parse one message; None when it has no Message-ID (nothing to dedupe it by)."""
    message = parse_bytes(raw)
    ids = message_ids(_header(message, "Message-ID"))
    if not ids:
        return None
    own = ids[0]
    references = message_ids(_header(message, "References"))
    for parent in message_ids(_header(message, "In-Reply-To")):
        if parent not in references:
            references.append(parent)
    subject = _header(message, "Subject").strip()
    body = trim_reply(_body_text(message))
    if not references and subject:
        body = f"Subject: {subject}\n\n{body}"  # a new conversation: the subject may be the ask
    files, notes = _attachments(message)
    text = "\n".join([body.strip(), *notes]).strip()
    try:
        date = parsedate_to_datetime(_header(message, "Date")).timestamp()
    except (TypeError, ValueError, IndexError):
        date = None
    return Mail(
        message_id=own,
        sender=sender_address(_header(message, "From")),
        subject=subject,
        thread=references[0] if references else own,
        references=tuple(references),
        text=text,
        attachments=files,
        auth_headers=tuple(_raw_headers(message, "Authentication-Results")),
        auth_above_received=_above_received(message, "Authentication-Results"),
        automatic=is_automatic(message),
        received_at=date,
    )
