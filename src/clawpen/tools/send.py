"""What an agent may say on its own, through its socket (the ``send_message`` tool).

The socket is the identity: a request on agent A's socket is A's. A may write to a chat paired
with A, and to no other: not another agent's chat, not a stranger's. Without ``to`` the message
goes to the chat of the task A is answering (in its thread). The message is committed as a
reply and delivered by the outbox, so it gets every guarantee a reply has (order per chat,
retries, nothing lost or doubled across a restart). An agent sends at most ``PER_MINUTE`` a
minute, ``BURST`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from clawpen_agent.protocol import OutgoingMessage

from ..door.server import ToolRefused
from ..errors import StoreError
from ..models import JOB_CHANNEL, Address, serves
from ..obs.logging import get_logger
from ..ratelimit import KeyedBuckets
from .api import NO_GATE, Chats, Gate

PER_MINUTE = 10
BURST = 5


def send_target(
    agent_id: str, to: str | None, answering: Address | None, pairings: Mapping[Address, str]
) -> Address | str:
    """Pure: where the message goes, or why it may not go anywhere. ``to`` is the agent's own
    words: read here, at the edge, into an ``Address``.

    >>> send_target("a", "telegram:1", None, {Address("telegram", "1"): "a"})
    Address(channel='telegram', chat='1', thread='')
    >>> send_target("a", "telegram:2", None, {Address("telegram", "2"): "b"})
    'telegram:2 is not a chat paired with you'
    """
    if to is None:
        if answering is None or answering.channel == JOB_CHANNEL:
            return "give 'to' (platform:chat_id): you are not answering a chat now"
        target = answering.chat_only
    else:
        try:
            target = Address.parse(to)
        except ValueError as exc:
            return str(exc)
    if not serves(agent_id, target, pairings):
        return f"{target.chat_address} is not a chat paired with you"
    if answering is not None and answering.chat_only == target:
        return answering  # the same chat: keep its thread
    return target


class AgentMessages:
    def __init__(
        self, chats: Chats, clock: Callable[[], float] = time.monotonic, gate: Gate = NO_GATE
    ) -> None:
        self.chats = chats
        self.gate = gate
        self.clock = clock
        self.rate: KeyedBuckets[str] = KeyedBuckets(PER_MINUTE / 60, BURST)
        self.log = get_logger()

    async def send(
        self, agent_id: str, message: OutgoingMessage, task_id: int | None = None
    ) -> dict[str, Any]:
        answering = self.chats.answering(agent_id, task_id)
        target = send_target(agent_id, message.to, answering, self.chats.pairings)
        if isinstance(target, str):
            self.log.warning("agent_message_refused", agentId=agent_id, reason=target)
            raise ToolRefused(403, target)
        if not self.rate.allow(agent_id, self.clock()):
            raise ToolRefused(429, f"at most {PER_MINUTE} messages a minute; wait a little")
        elsewhere = answering is None or answering.chat_only != target.chat_only
        verdict = None
        if elsewhere and self.gate.asks(agent_id, "send_message"):
            # what the card shows is what is sent: the text and the chat, exactly
            args = {"to": target.chat_address, "thread": target.thread, "text": message.text}
            preview = message.text if len(message.text) <= 300 else message.text[:300] + "..."
            verdict = await self.gate.request(
                agent_id,
                "send_message",
                args,
                f"send to {target.chat_address}:\n{preview}",
                task_id,
            )
            if not verdict.approved:
                self.log.info("agent_message_refused", agentId=agent_id, reason=str(verdict))
                raise ToolRefused(403, f"send_message {verdict}; not sent")
            if not verdict.first:  # a re-run of the task: it was sent the first time
                return {"sent": True, "to": target.chat_address, "approval": "approved"}
        try:
            reply = await self.chats.send_message(agent_id, target, message.text)
        except StoreError as exc:
            self.log.error("store_unwritable", what="agent_message", error=str(exc))
            raise ToolRefused(503, "the message could not be stored; try again shortly") from None
        if reply is None:  # unpaired between the check above and the commit
            reason = f"{target.chat_address} is no longer a chat paired with you"
            self.log.warning("agent_message_refused", agentId=agent_id, reason=reason)
            raise ToolRefused(403, reason)
        self.log.info("agent_message_sent", agentId=agent_id, chat=target.chat_address)
        answer: dict[str, Any] = {"sent": True, "to": target.chat_address, "reply_id": reply.id}
        if verdict is not None:
            answer["approval"] = str(verdict)
        return answer
