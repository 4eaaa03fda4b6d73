"""Telegram: the Bot API, long-polled (python-telegram-bot over aiohttp).

``adapter.py`` the settings and the adapter, ``request.py`` python-telegram-bot's transport
over aiohttp, ``probe.py`` `clawpen doctor`'s check; ``plugin`` registers them.
"""

from __future__ import annotations

from ..base import ChannelPlugin, RateLimitSettings
from .adapter import MAX_FILE_BYTES, MAX_MESSAGE_LENGTH, TelegramAdapter, TelegramSettings
from .probe import probe

__all__ = ["TelegramAdapter", "TelegramSettings", "plugin"]

plugin = ChannelPlugin(
    name="telegram",
    settings=TelegramSettings,
    adapter=TelegramAdapter,
    chat_pattern=r"-?[0-9]{1,20}",
    chat_example="telegram:123456789",
    max_message_length=MAX_MESSAGE_LENGTH,
    max_file_bytes=MAX_FILE_BYTES,
    # Telegram: about one message a second per chat, 30 a second per bot
    rate_limit=RateLimitSettings(per_chat=1.0, per_chat_burst=5, overall=30.0, overall_burst=30),
    credentials=("token",),
    preload=(
        "telegram",
        "telegram.constants",
        "telegram.error",
        "telegram.request",
        "clawpen.channels.telegram.request",
    ),
    probe=probe,
)
