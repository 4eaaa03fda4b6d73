"""In-chat commands, answered by the orchestrator and never shown to a model: pure.

``parse`` says whether a message is one; the intake acts on it and commits the answer
through the ordinary reply path. A message that only looks like one (``/tmp/x is full``, an
unknown ``/word``) goes to the agent as usual.

    >>> parse("/new"), parse("/usage@clawpen_bot"), parse("/tmp/x is full"), parse("/fly")
    ('new', 'usage', None, None)
"""

from __future__ import annotations

import re

from ..store.base import UsageRow

COMMANDS = {
    "new": "start a fresh conversation (the agent forgets this chat's history, not its memory)",
    "stop": "stop what the agent is doing for this chat",
    "usage": "tokens and cost today (UTC) for this chat's agent",
    "help": "this list",
}
_COMMAND = re.compile(r"\s*/([a-z]+)(?:@\S+)?\s*", re.IGNORECASE)


def parse(text: str) -> str | None:
    """The command a whole message is (``/new``, ``/new@bot``), or None."""
    match = _COMMAND.fullmatch(text)
    if match is None or match.group(1).lower() not in COMMANDS:
        return None
    return match.group(1).lower()


def help_text() -> str:
    lines = [f"/{name} - {what}" for name, what in COMMANDS.items()]
    return "Commands (answered here, never sent to the agent):\n" + "\n".join(lines)


def new_session_text() -> str:
    return "Started a new conversation: earlier messages in this chat are forgotten."


def stop_text(running: bool) -> str:
    return "Stopping what I was doing." if running else "Nothing is running for this chat."


def usage_text(agent_id: str, rows: list[UsageRow], budget: int | None) -> str:
    """``rows``: today's usage of the agent, one per model.

    >>> usage_text("a", [], 1000)
    'Today (UTC) a has used no tokens (budget 1,000 tokens a day).'
    """
    tokens = sum(r.input_tokens + r.output_tokens for r in rows)
    of_budget = f" (budget {budget:,} tokens a day)" if budget else ""
    if not rows:
        return f"Today (UTC) {agent_id} has used no tokens{of_budget}."
    calls = sum(r.calls for r in rows)
    cost = sum(r.usd for r in rows)
    money = f", ${cost:.4f}" if cost else ", cost unknown (no prices configured)"
    lines = [
        f"Today (UTC) {agent_id} has used {tokens:,} tokens in {calls} model calls{money}"
        f"{of_budget}."
    ]
    for r in rows:
        price = f", ${r.usd:.4f}" if r.usd else ""
        lines.append(f"{r.model}: {r.input_tokens:,} in, {r.output_tokens:,} out{price}")
    return "\n".join(lines)
