"""Which chat reaches which agent: ``clawpen pair``, ``unpair`` and ``pairings``."""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import quote

import typer

from ..errors import ClawpenError
from .client import call
from .common import DEFAULT_CONFIG, ConfigOption, fail, first_agent, guard
from .views import render_pairings, render_strangers


def pair(
    chat: Annotated[str, typer.Argument(help="The chat, as platform:chat_id; or 'approve'.")],
    agent_or_code: Annotated[
        str | None, typer.Argument(help="The agent that answers it; after 'approve', the code.")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="The agent.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Pair a chat with an agent, at once and across restarts:
    ``clawpen pair telegram:123 assistant``, or, for a chat that was given a pairing code,
    ``clawpen pair approve ABCD-EFGH --agent assistant``."""
    if chat == "approve":
        if not agent_or_code or not agent:
            fail(
                ClawpenError(
                    "missing the code or --agent", "clawpen pair approve CODE --agent AGENT_ID"
                )
            )
        body = {"code": agent_or_code, "agent": agent}
        done = call(config, "POST", "/v1/pairings/approve", body)
        print(f"paired {done['chat']} with {done['agent']}")
        return
    agent = agent or agent_or_code
    if not agent:
        fail(ClawpenError("missing the agent", "clawpen pair PLATFORM:CHAT_ID AGENT_ID"))
    body = {"chat": chat, "agent": agent}
    call(config, "POST", "/v1/pairings", body)
    print(f"paired {chat} with {agent}")


def unpair(
    chat: Annotated[str, typer.Argument(help="The chat, as platform:chat_id.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Stop a chat from reaching any agent (config-file pairings return at the next start)."""
    call(config, "DELETE", f"/v1/pairings/{quote(chat, safe='')}")
    print(f"unpaired {chat}")


def pairings(
    pending: Annotated[
        bool, typer.Option("--pending", help="Chats that wrote but are not paired.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """List the chats paired with agents; with --pending, the chats waiting to be paired (who
    wrote from an unpaired chat in the last week), each with the command that pairs it."""
    if pending:
        chats = call(config, "GET", "/v1/strangers")
        agent = guard(lambda: first_agent(config))
        print(render_strangers(chats, agent, time.time()))
    else:
        paired = call(config, "GET", "/v1/pairings")
        codes = call(config, "GET", "/v1/pairings/pending")
        print(render_pairings(paired, codes, time.time()))
        return
    for code in call(config, "GET", "/v1/pairings/pending"):
        minutes = max(0, round((code["expires_at"] - time.time()) / 60))
        print(f"{code['chat']}\t(waiting for approval; its code expires in {minutes} min)")
