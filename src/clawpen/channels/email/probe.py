"""`clawpen doctor`'s check of e-mail: an IMAP login through the adapter's own code (TLS or
STARTTLS, password or OAuth2)."""

from __future__ import annotations

import asyncio

from ..base import ChannelFatal, Finding
from .adapter import EmailAdapter
from .imap import close
from .settings import EmailSettings


async def probe(block: EmailSettings) -> Finding:
    where = f"{block.imap.host}:{block.imap.port}"
    try:
        adapter = EmailAdapter(block)
        imap = await asyncio.wait_for(adapter.imap.login(asyncio.Event()), block.timeout)
        close(imap)
    except ChannelFatal as exc:
        return (str(exc).removeprefix("email: "), "store the right password (or oauth2 token)")
    except (OSError, ConnectionError, TimeoutError) as exc:
        return (
            f"the IMAP server {where} does not answer or TLS failed ({exc})",
            "check channels.email.imap (host, port, starttls) and ca_file",
        )
    return None
