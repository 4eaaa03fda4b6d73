"""Discord: the gateway in, REST out (discord.py).

``adapter.py`` the settings and the adapter, ``client.py`` discord.py's client pointed at
the configured API, ``probe.py`` `clawpen doctor`'s check; ``plugin`` registers them.
"""

from __future__ import annotations

from ..base import MB, ChannelPlugin, RateLimitSettings
from .adapter import MAX_MESSAGE_LENGTH, DiscordAdapter, DiscordSettings
from .probe import probe

__all__ = ["DiscordAdapter", "DiscordSettings", "plugin"]

plugin = ChannelPlugin(
    name="discord",
    settings=DiscordSettings,
    adapter=DiscordAdapter,
    chat_pattern=r"[0-9]{15,21}",
    chat_example="discord:123456789012345678",
    max_message_length=MAX_MESSAGE_LENGTH,
    max_file_bytes=10 * MB,
    # Discord: 5 messages per 5 s per channel, 50 requests a second per bot
    rate_limit=RateLimitSettings(per_chat=1.0, per_chat_burst=5, overall=50.0, overall_burst=50),
    credentials=("token",),
    preload=(
        "discord",
        "clawpen.channels.discord.client",
    ),
    probe=probe,
)
