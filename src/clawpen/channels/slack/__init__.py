"""Slack: Socket Mode in, the Web API out (slack_sdk).

``adapter.py`` the settings and the adapter, ``probe.py`` `clawpen doctor`'s check;
``plugin`` registers them.
"""

from __future__ import annotations

from ..base import MB, ChannelPlugin, RateLimitSettings
from .adapter import MAX_MESSAGE_LENGTH, SlackAdapter, SlackSettings
from .probe import probe

__all__ = ["SlackAdapter", "SlackSettings", "plugin"]

plugin = ChannelPlugin(
    name="slack",
    settings=SlackSettings,
    adapter=SlackAdapter,
    chat_pattern=r"[CDG][A-Z0-9]{2,20}",
    chat_example="slack:D0123ABCD",
    max_message_length=MAX_MESSAGE_LENGTH,
    max_file_bytes=100 * MB,  # Slack takes 1 GB; we cap it
    # chat.postMessage: about one message a second per channel (short bursts allowed)
    rate_limit=RateLimitSettings(per_chat=1.0, per_chat_burst=3, overall=10.0, overall_burst=20),
    credentials=("bot_token", "app_token"),
    preload=(
        "slack_sdk",
        "slack_sdk.errors",
        "slack_sdk.web.async_client",
        "slack_sdk.socket_mode.aiohttp",
        "slack_sdk.socket_mode.request",
        "slack_sdk.socket_mode.response",
        "aiohttp",
    ),
    probe=probe,
)
