"""Discord's message components, pure: a card's buttons as an action row, a button's tap read
from a raw ``INTERACTION_CREATE`` (checked: it is what a platform sent, so hostile until shown
otherwise), and the interaction responses that answer it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...models import Address
from ...obs.logging import get_logger
from ...store.base import StoreUnavailable
from ..base import Button, CardTap, TapOutcome, tap_problem

if TYPE_CHECKING:
    import discord

    from .client import Bot

MAX_MESSAGE_LENGTH = 2000
MAX_BUTTON_LABEL = 80
COMPONENT_INTERACTION = 3
BUTTON = 2
THREAD_TYPES = frozenset({10, 11, 12})  # announcement, public and private threads
EPHEMERAL = 1 << 6
CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 4, 6, 7  # interaction responses
NOT_RECORDED = "Not recorded (the store is busy); tap again shortly."


def buttons_view(buttons: Sequence[Button]) -> discord.ui.View:
    """The card's buttons as an action row. The view is stopped before it is sent, so that
    discord.py keeps no registry of it: a tap is read raw (``client.py``) and decided by the
    core, across restarts too."""
    import discord

    view = discord.ui.View(timeout=None)
    for index, button in enumerate(buttons):
        style = discord.ButtonStyle.primary if index == 0 else discord.ButtonStyle.secondary
        view.add_item(
            discord.ui.Button(
                label=button.label[:MAX_BUTTON_LABEL], custom_id=button.data, style=style
            )
        )
    view.stop()
    return view


async def decided(deciding: asyncio.Future[TapOutcome]) -> TapOutcome | None:
    """The core's answer to a tap; a notice to tap again when the store could not record it;
    None when the core could not be asked at all (the bridge is gone)."""
    try:
        return await deciding
    except StoreUnavailable:
        return TapOutcome(NOT_RECORDED, "")
    except Exception:
        get_logger().exception("channel_tap_failed", channel="discord")
        return None


def response(kind: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "data": data} if data is not None else {"type": kind}


def notice(notice: str) -> dict[str, Any]:
    """A message only the tapper sees, mentioning nobody."""
    return {
        "content": notice[:MAX_MESSAGE_LENGTH],
        "flags": EPHEMERAL,
        "allowed_mentions": {"parse": []},
    }


def answer(outcome: TapOutcome) -> dict[str, Any]:
    """The response to a tap decided in time: the card updated without its buttons, or the
    tapper told; with neither, the tap is acknowledged and nothing changes."""
    if outcome.card:
        return response(
            UPDATE_MESSAGE,
            {
                "content": outcome.card[:MAX_MESSAGE_LENGTH],
                "components": [],
                "allowed_mentions": {"parse": []},
            },
        )
    if outcome.notice:
        return response(CHANNEL_MESSAGE, notice(outcome.notice))
    return response(DEFERRED_UPDATE_MESSAGE)


def card_tap(raw: Any, client: Bot) -> tuple[CardTap, str, str] | None:
    """(the tap, the interaction's id and token) of a button pressed on a message; None for
    any other interaction. Raises (KeyError, TypeError, ValueError) on a malformed one."""
    if not isinstance(raw, dict) or raw.get("type") != COMPONENT_INTERACTION:
        if isinstance(raw, dict) and isinstance(raw.get("type"), int):
            return None  # a command, an autocomplete, a modal: this bot registers none
        raise ValueError("an interaction without a type")
    data = raw["data"]
    if data.get("component_type") != BUTTON:
        return None
    member = raw.get("member")
    user = member["user"] if member is not None else raw["user"]
    channel_id = snowflake(raw["channel_id"], "channel_id")
    channel = raw.get("channel")
    parent = channel.get("parent_id") if isinstance(channel, dict) else None
    is_thread = isinstance(channel, dict) and channel.get("type") in THREAD_TYPES
    if not is_thread:
        known = client.get_channel(int(channel_id))
        parent = getattr(known, "parent_id", None) if known is not None else None
        is_thread = parent is not None
    address = (
        Address("discord", snowflake(str(parent), "channel.parent_id"), channel_id)
        if is_thread
        else Address("discord", channel_id)
    )
    custom_id = data["custom_id"]
    if not isinstance(custom_id, str):
        raise ValueError("data.custom_id is not a string")
    tap = CardTap(
        address=address,
        sender_id=snowflake(user["id"], "user.id"),
        data=custom_id,
        platform_id=snowflake(raw["message"]["id"], "message.id"),
    )
    problem = tap_problem(tap)
    if problem is not None:
        raise ValueError(problem)
    token = raw["token"]
    if not isinstance(token, str) or not token or len(token) > 500:
        raise ValueError("the interaction's token is missing or oversized")
    return tap, snowflake(raw["id"], "id"), token


def snowflake(value: Any, name: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,20}", value):
        raise ValueError(f"{name} is not a Discord id")
    return value
