"""`clawpen doctor`'s channel probes: one cheap, read-only call per platform that says whether
it answers and takes the configured token.

Each probe takes the channel's settings and returns None (fine) or ``(problem, fix)``; it
never sends a message. Network failures and refusals are told apart, since their fixes differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

Finding = tuple[str, str] | None
Probe = Callable[[Any], Finding]
TIMEOUT = 10.0


def telegram(block: Any) -> Finding:
    base = str(block.api_base_url).rstrip("/")
    try:
        response = httpx.get(f"{base}/bot{block.token}/getMe", timeout=TIMEOUT)
    except httpx.HTTPError:
        return (f"{base} does not answer", "check the network, or channels.telegram.api_base_url")
    if response.status_code in (401, 404):
        return ("Telegram refused the bot token", "get a new one from @BotFather")
    return None


def slack(block: Any) -> Finding:
    """``auth.test`` with the bot token, ``apps.connections.open`` with the app token (it only
    hands out a WebSocket URL; nothing connects to it)."""
    base = str(block.api_base_url).rstrip("/")
    checks = (
        ("auth.test", block.bot_token, "bot_token", "the Bot User OAuth Token (xoxb-...)"),
        ("apps.connections.open", block.app_token, "app_token", "an app-level token (xapp-...)"),
    )
    for method, token, key, kind in checks:
        try:
            response = httpx.post(
                f"{base}/{method}", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
            )
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return (
                f"Slack does not answer at {base} ({type(exc).__name__})",
                "check the network, or channels.slack.api_base_url",
            )
        if not answer.get("ok"):
            error = answer.get("error", f"HTTP {response.status_code}")
            return (
                f"Slack refused channels.slack.{key} ({error})",
                f"set it to {kind} from your app's settings at api.slack.com/apps",
            )
    return None


def discord(block: Any) -> Finding:
    base = str(block.api_base_url).rstrip("/")
    url = f"{base}/v10/users/@me"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bot {block.token}"}, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return (
            f"Discord does not answer at {base} ({type(exc).__name__})",
            "check the network, or channels.discord.api_base_url",
        )
    if response.status_code == 401:
        return (
            "Discord refused the bot token",
            "reset it in the Developer Portal (Bot > Reset Token) and store the new one",
        )
    if response.status_code >= 400:
        return (f"Discord answered {response.status_code} at {url}", "check api_base_url")
    return None


def whatsapp(block: Any) -> Finding:
    """``GET /{phone_number_id}``: the token must be good and the number the app's."""
    base = str(block.api_base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {block.access_token}"}
    try:
        response = httpx.get(f"{base}/{block.phone_number_id}", headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return (
            f"the WhatsApp Cloud API does not answer at {base} ({type(exc).__name__})",
            "check the network, or channels.whatsapp.api_base_url",
        )
    if response.status_code == 401:
        return (
            "Meta refused channels.whatsapp.access_token (expired or revoked)",
            "create a System User token in Meta Business settings and store it",
        )
    if response.status_code >= 400:
        return (
            f"Meta does not know phone number id {block.phone_number_id} ({response.status_code})",
            "copy channels.whatsapp.phone_number_id from WhatsApp > API Setup in the app",
        )
    return None


def email(block: Any) -> Finding:
    """An IMAP login through the adapter's own code (TLS or STARTTLS, password or OAuth2)."""
    from ..channels.base import ChannelFatal
    from ..channels.email import EmailAdapter, _close

    async def login() -> None:
        adapter = EmailAdapter(block)
        imap = await asyncio.wait_for(adapter._login(asyncio.Event()), block.timeout)
        _close(imap)

    where = f"{block.imap.host}:{block.imap.port}"
    try:
        asyncio.run(login())
    except ChannelFatal as exc:
        return (str(exc).removeprefix("email: "), "store the right password (or oauth2 token)")
    except (OSError, ConnectionError, TimeoutError) as exc:
        return (
            f"the IMAP server {where} does not answer or TLS failed ({exc})",
            "check channels.email.imap (host, port, starttls) and ca_file",
        )
    return None


PROBES: dict[str, Probe] = {
    "telegram": telegram,
    "slack": slack,
    "discord": discord,
    "whatsapp": whatsapp,
    "email": email,
}
