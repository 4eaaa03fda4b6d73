"""The local CLI channel, for `clawpen chat`: in the orchestrator's process, no credential.

``adapter.py`` the settings and the channel; ``plugin`` registers them.
"""

from __future__ import annotations

from ..base import MB, ChannelPlugin, RateLimitSettings
from .adapter import CliChannel, CliSettings

__all__ = ["CliChannel", "CliSettings", "plugin"]

plugin = ChannelPlugin(
    name="cli",
    settings=CliSettings,
    adapter=CliChannel,
    chat_pattern=r"[a-z0-9][a-z0-9_-]{0,39}",  # the chat id names the agent
    chat_example="cli:assistant",
    max_message_length=CliChannel.max_message_length,
    max_file_bytes=100 * MB,
    rate_limit=RateLimitSettings(per_chat=0, overall=0),
    in_process=True,
)
