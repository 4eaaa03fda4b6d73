"""`clawpen doctor`'s check of Telegram: ``getMe`` with the bot token."""

from __future__ import annotations

from ..base import Finding
from ..probing import UNREACHABLE, no_answer, request
from .adapter import TelegramSettings


async def probe(block: TelegramSettings) -> Finding:
    base = str(block.api_base_url).rstrip("/")
    try:
        answer = await request("GET", f"{base}/bot{block.token}/getMe")
    except UNREACHABLE as exc:
        return no_answer("Telegram", base, "telegram", exc)
    if answer.status in (401, 404):
        return ("Telegram refused the bot token", "get a new one from @BotFather")
    return None
