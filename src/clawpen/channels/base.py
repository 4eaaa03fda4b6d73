"""The Channel protocol every platform adapter implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..models import InboundMessage, Rejection, Route

Accept = Callable[[InboundMessage], Awaitable[Route | Rejection | None]]
"""Commits a message and decides its route; ``None`` for a duplicate. Returns once committed."""


class SendError(Exception):
    """Sending failed. ``retry_after`` is the platform's own wait, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None, permanent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Channel(Protocol):
    name: str
    max_message_length: int

    async def run(self, accept: Accept) -> None:
        """Receive messages until cancelled, handing each to ``accept`` before acknowledging it."""

    async def send(self, chat_id: str, text: str) -> str:
        """Deliver one message of at most ``max_message_length``; returns its platform id.
        Raises SendError."""
