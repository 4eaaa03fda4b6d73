"""`clawpen doctor`'s check of Discord: ``GET /users/@me`` with the bot token."""

from __future__ import annotations

from ..base import Finding
from ..probing import UNREACHABLE, no_answer, request
from .adapter import DiscordSettings


async def probe(block: DiscordSettings) -> Finding:
    base = str(block.api_base_url).rstrip("/")
    url = f"{base}/v10/users/@me"
    try:
        answer = await request("GET", url, headers={"Authorization": f"Bot {block.token}"})
    except UNREACHABLE as exc:
        return no_answer("Discord", base, "discord", exc)
    if answer.status == 401:
        return (
            "Discord refused the bot token",
            "reset it in the Developer Portal (Bot > Reset Token) and store the new one",
        )
    if answer.status >= 400:
        return (f"Discord answered {answer.status} at {url}", "check api_base_url")
    return None
