"""Pure routing: which agent (if any) may see a message.

No I/O here: the decision is a function of the message and the pairings, so its tests are a
table. A message that is not routed is never shown to a model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..models import Address, InboundMessage, Rejection, Route

MAX_TEXT = 32_000


def route(
    message: InboundMessage,
    pairings: Mapping[Address, str],
    agents: Collection[str],
    every_message: Collection[Address] = (),
) -> Route | Rejection:
    """``pairings`` maps a chat (an ``Address`` without its thread) to an agent id;
    ``every_message``: the paired group chats where the agent hears everything, not only what
    mentions it.

    The CLI is reached only through the owner-only admin socket, so its chat id *names* the agent;
    every other channel needs an explicit pairing.
    """
    address = message.address
    chat = address.chat_only
    agent = address.chat if address.channel == "cli" else pairings.get(chat)
    if agent is None:
        return Rejection(f"{address.chat_address} is not paired with an agent")
    if agent not in agents:
        return Rejection(f"{address.chat_address}: no agent {agent!r}")
    if not message.addressed and chat not in every_message:
        return Rejection("a group message that does not mention the bot", ignored=True)
    # From here on the sender is someone the agent serves: a refusal is answered, not dropped.
    if not message.text.strip() and not message.attachments:
        return Rejection(
            "no text",
            answer="I could not read that message: please write it out, or send it as a file.",
        )
    if len(message.text) > MAX_TEXT:
        return Rejection(
            f"message of {len(message.text)} characters, over {MAX_TEXT}",
            answer=f"Your message has {len(message.text)} characters; I take at most"
            f" {MAX_TEXT}. Please send it in parts.",
        )
    return Route(agent)
