"""Value types shared by the orchestrator's modules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InboundMessage:
    """A chat message as every channel hands it over, before anything is decided about it."""

    channel: str  # "telegram", "cli", ...
    chat_id: str
    sender_id: str
    text: str
    platform_id: str  # the platform's own message id: the key for dropping duplicates
    received_at: float

    @property
    def address(self) -> str:
        """``channel:chat_id``, the form pairings use."""
        return f"{self.channel}:{self.chat_id}"


@dataclass(frozen=True)
class Route:
    agent_id: str


@dataclass(frozen=True)
class Rejection:
    reason: str  # for the log
    answer: str | None = None  # for the sender, when they may hear from us (a paired chat)


@dataclass(frozen=True)
class Reply:
    """An answer committed to the store and waiting to be delivered."""

    id: int
    task_id: int
    channel: str
    chat_id: str
    text: str
    attempts: int = 0
    chunks_sent: int = 0


@dataclass(frozen=True)
class ClaimedTask:
    """A batch of queued messages of one conversation, claimed for one agent turn."""

    id: int
    agent_id: str
    channel: str
    chat_id: str
    senders: tuple[str, ...]
    texts: tuple[str, ...]
    attempts: int
