"""E-mail through IMAP (aioimaplib, IDLE; polling where IDLE is missing) and SMTP (aiosmtplib).

The \\Seen flag is the acknowledgement: a message is fetched with BODY.PEEK (which leaves it
unseen) and flagged \\Seen only after the core committed it. Whatever was not flagged when the
connection dropped or the process died is fetched again on the next connection; the core drops
the duplicates by Message-ID (the platform id). Nothing is kept on disk by the adapter.

A From header is not an identity. Unless ``trust_unauthenticated`` is set, a message is handed
to the core only when the receiving server's Authentication-Results says DKIM or DMARC passed
for the From domain (``mailtext.verdict``): with ``authserv_id``, the first carrying that id;
without it, only one above the topmost Received line (a sender's own sit below every Received
line, so a forged one never counts). Anything else is never handed over, so no agent can hear
it, whoever is paired: it is flagged \\Seen (it stays in the mailbox for a human) and logged as
``email_unauthenticated``. Bounces, auto-replies and list mail are set aside the same way
(``email_automatic``), so two robots never answer each other for ever.

A mail is read whole only up to ``MAX_MAIL_BYTES`` (its RFC822.SIZE is asked first, and the
fetch itself is cut there whatever the server announced). A larger one is read as its header
only: the agent is told who sent it, its subject and that it was too large, so it can say so
to the sender; no more of it is held in memory.

Addresses: chat = the sender's address (lower-cased), thread = the Message-ID of the thread's
root (the first of References), so a reply continues its thread; replies carry In-Reply-To,
References and ``Re:`` and quote nothing. Replies go to the From address, never to Reply-To
(which the sender may point anywhere).

Mail has no buttons: a card is its text with a line "To <label>, reply with: <code>" per
button, and a reply whose text, once trimmed of quotes and signature, is a code alone is read
by the core as that sender's tap (so only an authenticated sender's ever counts). Mail cannot be
edited either: ``edit`` sends the new text as a reply to the card. A file goes as an attachment
to a reply (up to 25 MB), its caption as the text.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import OrderedDict
from email.errors import MessageError
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from ... import netenv
from ...models import Address, InboundMessage, OutboundFile, OutboundMessage
from ...obs.logging import get_logger
from ...retry import PLATFORM, STORE, Retrier
from ...store.base import StoreUnavailable
from ..base import MB, Accept, ChannelFatal, SendError, connected, with_reply_codes
from ..reach import cause_of
from . import mailreply, mailtext
from .imap import ImapLogin, Lost, close, until
from .oauth2 import Tokens
from .settings import EmailSettings

if TYPE_CHECKING:
    import aioimaplib

MAX_MESSAGE_LENGTH = 100_000  # a mail has no real limit; this keeps one reply readable
MAX_TEXT = 100_000  # characters of a received mail the agent reads
IDLE_SECONDS = 240.0  # IDLE is renewed this often (servers drop it after 29 min; NATs sooner)
MAX_MAIL_BYTES = 25 * 1024 * 1024  # a larger mail is read as its header only (Gmail's limit)
MAX_HEADER_BYTES = 256 * 1024  # of a mail's header, the most that is read
REMEMBERED = 1000  # received messages whose subject and references are kept for replies
MAX_FILE_BYTES = 25 * MB  # an attachment we send (Gmail's and most providers' limit)
# under a card's reply codes: the core takes a reply whose whole text is a code as a tap, and
# the quoted mail and signature below it are trimmed off (mailtext.trim_reply)
REPLY_HINT = "Reply with just the code; quoting this mail below it is fine."


class EmailAdapter:
    name = "email"
    max_message_length = MAX_MESSAGE_LENGTH

    def __init__(self, settings: EmailSettings) -> None:
        import aioimaplib  # noqa: F401  (imported now: the process drops privileges next)
        import aiosmtplib  # noqa: F401

        if settings.password is None and settings.oauth2 is None:
            raise ChannelFatal("email: set channels.email.password or channels.email.oauth2")
        self.settings = settings
        self.log = get_logger()
        # its own ca_file, else the bundle every connection uses (SSL_CERT_FILE, SSL_CERT_DIR)
        self.tls = (
            ssl.create_default_context(cafile=settings.ca_file)
            if settings.ca_file
            else netenv.current().fresh_ssl_context()
        )
        if not settings.tls_verify:
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE
        self.tokens = Tokens(settings.oauth2) if settings.oauth2 is not None else None
        self.domain = mailtext.sender_address(settings.address) or settings.address
        self.domain = self.domain.rpartition("@")[2]
        self.remembered: OrderedDict[str, tuple[str, tuple[str, ...]]] = OrderedDict()
        self.imap = ImapLogin(settings, self.tls, self.tokens)

    # -- in ------------------------------------------------------------------------------------

    async def run(self, accept: Accept) -> None:
        from aioimaplib import AioImapException

        connections = Retrier(PLATFORM)
        while True:
            lost = asyncio.Event()
            imap = None
            try:
                imap = await self.imap.login(lost)
                await connected(accept)
                await self._serve(imap, lost, accept, connections)
            except (OSError, TimeoutError, AioImapException, Lost) as exc:
                if cause_of(exc) is not None:
                    raise  # nothing answered: reach.py says so and tries again
                delay = connections.next_delay()
                self.log.warning(
                    "email_imap_disconnected",
                    channel=self.name,
                    error=f"{type(exc).__name__}: {exc}",
                    retryIn=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                if imap is not None:
                    close(imap)

    async def _serve(
        self,
        imap: aioimaplib.IMAP4,
        lost: asyncio.Event,
        accept: Accept,
        connections: Retrier,
    ) -> None:
        response = await imap.select(self.settings.mailbox)
        if response.result != "OK":
            raise ChannelFatal(
                f"email: the mailbox {self.settings.mailbox!r} cannot be opened; check "
                "channels.email.mailbox"
            )
        connections.reset()
        self.log.info("email_imap_connected", channel=self.name, idle=imap.has_capability("IDLE"))
        store = Retrier(STORE)
        while True:
            if lost.is_set():
                raise Lost("connection closed")
            unwritable = await self._take_unseen(imap, accept)
            if unwritable is not None:
                delay = store.next_delay()
                self.log.error(
                    "store_unwritable", channel=self.name, error=unwritable, retryIn=delay
                )
                await until(asyncio.sleep(delay), lost)
                continue
            store.reset()
            await self._wait_for_mail(imap, lost)

    async def _take_unseen(self, imap: aioimaplib.IMAP4, accept: Accept) -> str | None:
        """Hand every unseen message to the core, oldest first, flagging each \\Seen once
        committed. Returns the store's error when it could not commit (then stop: the rest
        stays unseen for the next round)."""
        response = await imap.uid_search("UNSEEN", charset=None)
        if response.result != "OK":
            raise Lost(f"SEARCH failed: {response.lines}")
        uids = response.lines[0].decode().split() if response.lines else []
        for uid in uids:
            if not uid.isdigit():
                continue
            size = await self._size(imap, uid)
            if size is None:
                continue  # expunged meanwhile
            whole = size <= MAX_MAIL_BYTES
            raw = await self._fetch(imap, uid, whole)
            if raw is not None and whole and len(raw) > MAX_MAIL_BYTES:  # larger than announced
                size, whole = len(raw), False
                raw = await self._fetch(imap, uid, whole)
            if raw is None:
                continue
            oversized = None if whole else size
            try:
                await self._hand_over(uid, raw, accept, oversized)
            except StoreUnavailable as exc:
                return str(exc)
            await imap.uid("store", uid, "+FLAGS.SILENT", "(\\Seen)")
        return None

    async def _size(self, imap: aioimaplib.IMAP4, uid: str) -> int | None:
        """The message's size as the server counts it; None when it is gone."""
        fetched = await imap.uid("fetch", uid, "(RFC822.SIZE)")
        for line in fetched.lines:
            found = re.search(rb"RFC822\.SIZE (\d+)", bytes(line))
            if fetched.result == "OK" and found is not None:
                return int(found.group(1))
        return None

    async def _fetch(self, imap: aioimaplib.IMAP4, uid: str, whole: bool) -> bytes | None:
        """The message (``whole``) or its header, never more than one byte past its cap (a
        partial fetch), whatever size the server announced."""
        if whole:
            part = f"BODY.PEEK[]<0.{MAX_MAIL_BYTES + 1}>"
        else:
            part = f"BODY.PEEK[HEADER]<0.{MAX_HEADER_BYTES}>"
        fetched = await imap.uid("fetch", uid, f"({part})")
        raw = next((bytes(line) for line in fetched.lines if isinstance(line, bytearray)), None)
        return raw if fetched.result == "OK" else None

    async def _hand_over(
        self, uid: str, raw: bytes, accept: Accept, oversized: int | None = None
    ) -> None:
        """Decide what one message is, and hand it to the core if it may reach an agent.
        ``oversized``: the size of a mail over ``MAX_MAIL_BYTES``, of which ``raw`` is only
        the header."""
        try:
            mail = mailtext.read_mail(raw)
        except Exception as exc:  # hostile bytes cost this message only
            self.log.warning("email_unreadable", channel=self.name, uid=uid, error=repr(exc))
            return
        if mail is None or mail.sender is None:
            self.log.warning(
                "email_unreadable", channel=self.name, uid=uid, error="no Message-ID or From"
            )
            return
        if mail.automatic or mail.sender == self.settings.address.lower():
            self.log.info("email_automatic", channel=self.name, uid=uid, sender=mail.sender)
            return
        authserv_id = self.settings.authserv_id
        if not self.settings.trust_unauthenticated and not mailtext.verdict(
            list(mail.auth_headers), mail.sender, authserv_id, mail.auth_above_received
        ):
            hint = None
            if authserv_id is None and len(mail.auth_headers) > mail.auth_above_received:
                hint = (
                    "only an Authentication-Results above the topmost Received line counts; "
                    "if your server writes its own below one (Gmail does), set "
                    "channels.email.authserv_id to its name"
                )
            self.log.warning(
                "email_unauthenticated",
                channel=self.name,
                uid=uid,
                sender=mail.sender,
                authenticationResults=mail.auth_headers[:1],
                hint=hint,
            )
            return
        self._remember(mail.message_id, mail.subject, mail.references)
        text = mail.text
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "\n[the rest of this mail was cut]"
        if oversized is not None:
            self.log.warning(
                "email_too_large",
                channel=self.name,
                uid=uid,
                sender=mail.sender,
                size=oversized,
                limit=MAX_MAIL_BYTES,
            )
            text = "\n".join([text, mailtext.too_large_note(oversized, MAX_MAIL_BYTES)]).strip()
        await accept(
            InboundMessage(
                address=Address(self.name, mail.sender, mailtext.short_id(mail.thread)),
                sender_id=mail.sender,
                text=text,
                platform_id=mailtext.short_id(mail.message_id),
                received_at=mail.received_at or time.time(),
                reply_to=mailtext.short_id(mail.references[-1]) if mail.references else "",
                attachments=mail.attachments,
            )
        )

    async def _wait_for_mail(self, imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        """Return when new mail may have come: IDLE says so, or IDLE is renewed, or (without
        IDLE) after ``poll_interval``. Raises ``Lost`` when the connection drops."""
        from aioimaplib import STOP_WAIT_SERVER_PUSH

        if not imap.has_capability("IDLE"):
            await until(asyncio.sleep(self.settings.poll_interval), lost)
            return
        idle = await until(imap.idle_start(timeout=IDLE_SECONDS), lost)
        try:
            while True:
                pushed = await until(imap.wait_server_push(IDLE_SECONDS + 30), lost)
                if pushed == STOP_WAIT_SERVER_PUSH:
                    return
                lines = [line for line in pushed if isinstance(line, bytes | bytearray)]
                if any(b"BYE" in line for line in lines):
                    raise Lost(b" ".join(lines).decode(errors="replace"))
                if any(b"EXISTS" in line for line in lines):
                    return
        finally:
            if imap.has_pending_idle() and not lost.is_set():
                imap.idle_done()
                await until(asyncio.wait_for(idle, self.settings.timeout), lost)

    # -- out -----------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> str:
        """A reply; a card's buttons as lines "To <label>, reply with: <code>" (mail has no
        buttons: the code replied is the tap, from an authenticated sender only)."""
        text = message.text
        if message.buttons:
            text = f"{with_reply_codes(message).text}\n\n{REPLY_HINT}"
        return await self._reply(message.address, text, message.reply_to)

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """Mail cannot be changed once sent: the card's new text goes as a reply to it."""
        await self._reply(address, text, platform_id)

    async def send_file(self, file: OutboundFile) -> str:
        """A reply (threaded like any) with the file attached, its caption as the text."""
        size = len(file.data)
        if size > MAX_FILE_BYTES:
            raise SendError(
                f"e-mail: {file.name} is {size / MB:.1f} MB, over the"
                f" {MAX_FILE_BYTES // MB} MB limit for a file by mail",
                permanent=True,
                about_message=True,
            )
        text = file.caption or f"{file.name} is attached."
        return await self._reply(file.address, text, file.reply_to, file)

    async def _reply(
        self, address: Address, text: str, reply_to: str, attachment: OutboundFile | None = None
    ) -> str:
        """Write and send one mail to the chat's address, threaded under ``reply_to`` (else
        the thread's root); its Message-ID."""
        import aiosmtplib

        mailreply.check_address(address.chat)  # before any round trip: it can never go out
        original = await self._original(reply_to or address.thread)
        message_id = make_msgid(domain=self.domain)
        mail = mailreply.build_reply(
            sender=self.settings.address,
            to=address.chat,
            text=text,
            message_id=message_id,
            date=formatdate(usegmt=True),
            original=original,
            thread=address.thread,
            attachment=attachment,
        )
        server = self.settings.smtp
        smtp = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=not server.starttls,
            start_tls=server.starttls,
            tls_context=self.tls,
            timeout=self.settings.timeout,
        )
        try:
            async with smtp:
                await self._smtp_login(smtp)
                await smtp.send_message(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(refused.code >= 500 for refused in exc.recipients)
            raise SendError(str(exc), permanent=permanent) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SendError(f"SMTP login refused ({exc.code} {exc.message})") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SendError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from None
        except (ValueError, TypeError, MessageError) as exc:  # this mail can never be written
            raise SendError(
                f"e-mail: the reply cannot be sent ({type(exc).__name__}: {exc}); given up",
                permanent=True,
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(f"{type(exc).__name__}: {exc}") from None
        # its own References, so that a reply to it (a card's code) threads under the root
        references = tuple(mailtext.message_ids(str(mail.get("References", ""))))
        self._remember(message_id, str(mail["Subject"]), references)
        return mailtext.short_id(message_id)

    async def _smtp_login(self, smtp: Any) -> None:
        if self.tokens is None:
            await smtp.login(self.settings.username, self.settings.password or "")
            return
        import aiosmtplib

        try:
            await smtp.auth_xoauth2(self.settings.username, await self.tokens.get())
        except aiosmtplib.SMTPAuthenticationError:
            await smtp.auth_xoauth2(self.settings.username, await self.tokens.get(renew=True))

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """E-mail has no typing indicator."""

    def _remember(self, message_id: str, subject: str, references: tuple[str, ...]) -> None:
        self.remembered[mailtext.short_id(message_id)] = (subject, references)
        self.remembered.move_to_end(mailtext.short_id(message_id))
        while len(self.remembered) > REMEMBERED:
            self.remembered.popitem(last=False)

    async def _original(self, platform_id: str) -> tuple[str, str, tuple[str, ...]] | None:
        """The message a reply answers: its Message-ID, subject and References. Remembered
        since it was received, or looked up over IMAP (after a restart); None if not found."""
        if not platform_id.startswith("<"):
            return None  # empty, or a hashed id too long to search for
        if platform_id in self.remembered:
            subject, references = self.remembered[platform_id]
            return platform_id, subject, references
        try:
            found = await self._look_up(platform_id)
        except Exception as exc:  # best effort: without it the reply goes out unthreaded
            self.log.info("email_original_not_found", channel=self.name, error=repr(exc))
            found = None
        if found is None and platform_id.lower().endswith(f"@{self.domain.lower()}>"):
            # one of ours (a card edited after a restart): never in the mailbox we read, but
            # In-Reply-To alone threads the reply under it
            return platform_id, "", ()
        if found is None:
            return None
        subject, references = found
        return platform_id, subject, references

    async def _look_up(self, message_id: str) -> tuple[str, tuple[str, ...]] | None:
        imap = await self.imap.login(asyncio.Event())
        try:
            await imap.select(self.settings.mailbox)  # only PEEKs follow: no flag changes
            escaped = message_id.replace("\\", "\\\\").replace('"', '\\"')
            response = await imap.uid_search("HEADER", "Message-ID", f'"{escaped}"', charset=None)
            uids = response.lines[0].decode().split() if response.lines else []
            fields = "HEADER.FIELDS (MESSAGE-ID SUBJECT REFERENCES)"
            for uid in uids:
                fetched = await imap.uid(
                    "fetch",
                    uid,
                    f"(BODY.PEEK[{fields}]<0.{MAX_HEADER_BYTES}>)",
                )
                raw = next((bytes(x) for x in fetched.lines if isinstance(x, bytearray)), b"")
                headers = mailtext.parse_bytes(raw)
                if mailtext.message_ids(str(headers.get("Message-ID", ""))) == [message_id]:
                    refs = mailtext.message_ids(str(headers.get("References", "")))
                    return str(headers.get("Subject", "")), tuple(refs)
            return None
        finally:
            close(imap)
