"""E-mail: IMAP IDLE in, SMTP out.

``settings.py`` the ``channels.email`` block, ``adapter.py`` the adapter, ``mailtext.py``
and ``mailreply.py`` a mail in and a reply out (pure), ``oauth2.py`` XOAUTH2 tokens,
``probe.py`` `clawpen doctor`'s check; ``plugin`` registers them.
"""

from __future__ import annotations

from ..base import MB, ChannelPlugin, RateLimitSettings
from .adapter import MAX_MESSAGE_LENGTH, EmailAdapter
from .probe import probe
from .settings import EmailSettings

__all__ = ["EmailAdapter", "EmailSettings", "plugin"]

plugin = ChannelPlugin(
    name="email",
    settings=EmailSettings,
    adapter=EmailAdapter,
    chat_pattern=r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9-]+(\.[a-z0-9-]+)+",
    chat_example="email:alice@example.com",
    max_message_length=MAX_MESSAGE_LENGTH,
    max_file_bytes=25 * MB,
    # mail providers throttle bulk senders: a mail every few seconds per address, 1/s overall
    rate_limit=RateLimitSettings(per_chat=0.2, per_chat_burst=5, overall=1.0, overall_burst=10),
    credentials=("password", "oauth2"),
    preload=(
        "aioimaplib",
        "aiosmtplib",
        "email.mime.text",
        "email.headerregistry",
        "email._header_value_parser",
        "encodings.ascii",  # mailtext.parse_bytes decodes through the codec registry
        "google.auth.transport.requests",
        "google.oauth2.credentials",
        "requests",
    ),
    probe=probe,
)
