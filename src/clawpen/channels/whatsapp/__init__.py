"""WhatsApp: the Cloud API's signed webhooks in, the Graph API out.

``settings.py`` its block, ``adapter.py`` the adapter and its webhook route (served by the shared
``channels/webhook.py``), ``events.py`` what Meta's payloads and answers mean (pure),
``cards.py`` a message as the bodies sent for it (a card as reply buttons; pure), ``media.py``
the limits and types of files (pure), ``probe.py``
`clawpen doctor`'s check; ``plugin`` registers them.
"""

from __future__ import annotations

from ..base import MB, ChannelPlugin, RateLimitSettings
from .adapter import MAX_MESSAGE_LENGTH, WhatsAppAdapter
from .probe import probe
from .settings import WhatsAppSettings

__all__ = ["WhatsAppAdapter", "WhatsAppSettings", "plugin"]

plugin = ChannelPlugin(
    name="whatsapp",
    settings=WhatsAppSettings,
    adapter=WhatsAppAdapter,
    chat_pattern=r"[0-9]{6,15}",  # a wa_id: the user's number, country code first, no "+"
    chat_example="whatsapp:15551234567",
    max_message_length=MAX_MESSAGE_LENGTH,
    max_file_bytes=100 * MB,  # a document's limit; an image's is 5 MB (the adapter says so)
    # Meta allows 80 messages a second per business number by default and throttles bursts to
    # one user ("pair rate limit", error 131056): stay well under both
    rate_limit=RateLimitSettings(per_chat=1.0, per_chat_burst=5, overall=20.0, overall_burst=20),
    credentials=("access_token", "app_secret", "verify_token"),
    preload=(
        "aiohttp",
        "aiohttp.web",
        "clawpen.channels.webhook",
        "clawpen.channels.whatsapp.events",
        "json",
        "hmac",
        "clawpen.ports.safejson",
    ),
    probe=probe,
)
