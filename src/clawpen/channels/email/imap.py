"""An IMAP session for the e-mail adapter: connect (TLS, or STARTTLS, which aioimaplib lacks),
log in (password or XOAUTH2, a token renewed once), and the helpers that keep a dropped
connection from hanging its caller."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from ..base import ChannelFatal
from .oauth2 import Tokens
from .settings import EmailSettings

if TYPE_CHECKING:
    import aioimaplib

T = TypeVar("T")


class Lost(Exception):
    """The IMAP connection went away."""


class ImapLogin:
    """Opens logged-in sessions to the configured IMAP server."""

    def __init__(self, settings: EmailSettings, tls: ssl.SSLContext, tokens: Tokens | None) -> None:
        self.settings = settings
        self.tls = tls
        self.tokens = tokens

    async def login(self, lost: asyncio.Event) -> aioimaplib.IMAP4:
        """A logged-in IMAP session; ``lost`` is set when its connection drops."""
        import aioimaplib

        server = self.settings.imap
        imap: aioimaplib.IMAP4
        if server.starttls:
            imap = aioimaplib.IMAP4(server.host, server.port, timeout=self.settings.timeout)
        else:
            imap = aioimaplib.IMAP4_SSL(
                server.host, server.port, timeout=self.settings.timeout, ssl_context=self.tls
            )
        protocol = imap.protocol
        protocol.conn_lost_cb = lambda exc: lost.set()
        answer_sasl_errors(protocol)
        try:
            await self._authenticate(imap)
        except BaseException:
            close(imap)
            raise
        return imap

    async def _authenticate(self, imap: aioimaplib.IMAP4) -> None:
        """Greeting, STARTTLS if asked for, login. A refused login is fatal (the config is
        wrong); a token is renewed once first, and a server that cannot check logins for the
        moment ([UNAVAILABLE]) is tried again later."""
        server = self.settings.imap
        await imap.wait_hello_from_server()
        if server.starttls:
            await self._starttls(imap)
        for attempt in range(2):
            if self.tokens is not None:
                token = await self.tokens.get(renew=attempt > 0)
                response = await imap.xoauth2(self.settings.username, token)
            else:
                response = await imap.login(self.settings.username, self.settings.password or "")
            if response.result == "OK":
                return
            if any(b"[UNAVAILABLE]" in bytes(line) for line in response.lines):
                raise ConnectionError(f"IMAP login unavailable for now: {response.lines}")
            if self.tokens is None:
                break  # a refused password stays refused; a token may be renewed once
        key = "oauth2" if self.tokens is not None else "password"
        raise ChannelFatal(
            f"email: the IMAP server {server.host} refused the login of "
            f"{self.settings.username}; check channels.email.username and channels.email.{key}"
        )

    async def _starttls(self, imap: aioimaplib.IMAP4) -> None:
        """aioimaplib has no STARTTLS: ask for it, then upgrade the transport in place."""
        from aioimaplib import Command

        protocol = imap.protocol
        command = Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await self._step(protocol.execute(command))
        if response.result != "OK":
            raise ConnectionError(f"STARTTLS refused: {response.lines}")
        loop = asyncio.get_running_loop()
        transport = await self._step(
            loop.start_tls(
                protocol.transport, protocol, self.tls, server_hostname=self.settings.imap.host
            )
        )
        protocol.transport = transport
        await self._step(protocol.capability())  # capabilities change once encrypted

    async def _step(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, self.settings.timeout)


async def until(awaitable: Awaitable[T], lost: asyncio.Event) -> T:
    """Await ``awaitable`` unless the connection drops first (then raise ``Lost``)."""
    work = asyncio.ensure_future(awaitable)
    dropped = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({work, dropped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        dropped.cancel()
    if not work.done():
        work.cancel()
        raise Lost("connection closed")
    return work.result()


def answer_sasl_errors(protocol: Any) -> None:
    """A refused XOAUTH2 login comes as a challenge carrying the error, which the client must
    answer with an empty line before the server says NO (RFC 7628). aioimaplib does not, and
    would wait until its timeout; answer it here."""
    original = protocol._continuation

    def continuation(line: bytes) -> None:
        command = protocol.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            protocol.transport.write(b"\r\n")
            return
        original(line)

    protocol._continuation = continuation


def close(imap: aioimaplib.IMAP4) -> None:
    """Drop the connection (no LOGOUT round trip: it may be gone already)."""
    transport = getattr(imap.protocol, "transport", None)
    if transport is not None:
        transport.close()
