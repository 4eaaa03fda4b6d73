"""`clawpen doctor`'s check of Slack: ``auth.test`` with the bot token, then
``apps.connections.open`` with the app token (it only hands out a WebSocket URL; nothing
connects to it)."""

from __future__ import annotations

from ..base import Finding
from ..probing import UNREACHABLE, no_answer, request
from .adapter import SlackSettings


async def probe(block: SlackSettings) -> Finding:
    base = str(block.api_base_url).rstrip("/")
    checks = (
        ("auth.test", block.bot_token, "bot_token", "the Bot User OAuth Token (xoxb-...)"),
        ("apps.connections.open", block.app_token, "app_token", "an app-level token (xapp-...)"),
    )
    for method, token, key, kind in checks:
        try:
            answer = await request(
                "POST", f"{base}/{method}", headers={"Authorization": f"Bearer {token}"}
            )
            found = answer.json()
        except (*UNREACHABLE, ValueError) as exc:
            return no_answer("Slack", base, "slack", exc)
        if not found.get("ok"):
            error = found.get("error", f"HTTP {answer.status}")
            return (
                f"Slack refused channels.slack.{key} ({error})",
                f"set it to {kind} from your app's settings at api.slack.com/apps",
            )
    return None
