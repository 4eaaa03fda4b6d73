"""The local CLI channel: `clawpen chat` talks to it through the owner-only admin socket.

It holds no credential and speaks to no platform, so it stays in the orchestrator's process.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import time
import uuid
from pathlib import Path

from ...models import Address, InboundMessage, OutboundFile, OutboundMessage, Rejection, Route
from ..base import Accept, ChannelSettings, SendError, with_reply_codes

UNREAD = "unread:"  # the platform id of a reply no session was waiting for
CARD_HEAD = "Approval needed: "  # how an approval card begins (core/approvals.py)


class CliSettings(ChannelSettings):
    pass


class CliChannel:
    name = "cli"
    max_message_length = 1_000_000

    def __init__(self, settings: CliSettings | None = None, files_dir: Path | None = None) -> None:
        self._accept: Accept | None = None
        # where an agent's files land (``data_dir/files/cli``); None: files are refused
        self.files_dir = files_dir
        self._files: dict[Address, list[str]] = {}  # lines naming files sent, per session
        # one queue per chat session, keyed by its conversation (``cli:AGENT:SESSION``)
        self._listeners: dict[Address, asyncio.Queue[str]] = {}
        self._waiting: dict[Address, int] = {}  # asks still waiting, per session
        # sessions shown an approval card whose answer is still to come: kept, so that the
        # answer after the decision reaches them (``more``)
        self._cards: dict[Address, int] = {}
        self._ready = asyncio.Event()

    async def run(self, accept: Accept) -> None:
        self._accept = accept
        self._ready.set()
        await asyncio.Event().wait()  # replies arrive through send()

    async def ask(
        self, agent_id: str, text: str, sender: str | None = None, session: str = ""
    ) -> str:
        """Send ``text`` to an agent and wait for its reply. The chat id names the agent; the
        thread names the session, so that each `clawpen chat` is a conversation of its own and
        gets its own replies."""
        await self._ready.wait()
        assert self._accept is not None
        address = Address(self.name, agent_id, session)
        queue = self._listeners.setdefault(address, asyncio.Queue())
        waiting = self._waiting.get(address, 0)
        self._waiting[address] = waiting + 1
        try:
            message = InboundMessage(
                address=address,
                sender_id=sender or getpass.getuser(),
                text=text,
                platform_id=uuid.uuid4().hex,
                received_at=time.time(),
            )
            decision = await self._accept(message)
            if isinstance(decision, Rejection) and not decision.answer:
                raise LookupError(decision.reason)
            assert isinstance(decision, Route | Rejection)  # answered: a card's code typed
            reply = await queue.get()
            # the files the agent sent meanwhile arrived before its answer (order per chat)
            return "\n".join([*self._files.pop(address, []), reply])
        finally:
            self._release(address, queue)

    async def more(self, agent_id: str, session: str = "") -> str:
        """The session's next reply: after an approval card was decided, the agent's answer."""
        await self._ready.wait()
        address = Address(self.name, agent_id, session)
        queue = self._listeners.get(address)
        if queue is None:
            raise LookupError(f"chat session {address} waits for nothing")
        self._waiting[address] = self._waiting.get(address, 0) + 1
        try:
            text = await queue.get()
            if not text.startswith(CARD_HEAD):
                self._cards.pop(address, None)
            return text
        finally:
            self._release(address, queue)

    def _release(self, address: Address, queue: asyncio.Queue[str]) -> None:
        self._waiting[address] -= 1
        if not self._waiting[address]:
            del self._waiting[address]
            if queue.empty() and not self._cards.get(address):
                self._listeners.pop(address, None)

    async def send(self, message: OutboundMessage) -> str:
        """Hand the reply to the session that asked. With none waiting (its terminal was
        closed, or the orchestrator restarted under it) the reply goes to the conversation's
        history: its platform id says ``unread``, and the next `clawpen chat --session` of
        that conversation shows it (``Store.take_unread``)."""
        card = bool(message.buttons)
        message = with_reply_codes(message)  # `clawpen chat` asks for the decision
        queue = self._listeners.get(message.address)
        held = self._cards.get(message.address)
        if queue is None or (message.address not in self._waiting and not held):
            return f"{UNREAD}{uuid.uuid4().hex}"
        if card:
            self._cards[message.address] = self._cards.get(message.address, 0) + 1
        queue.put_nowait(message.text)
        return uuid.uuid4().hex

    async def edit(self, address: Address, platform_id: str, text: str) -> None:
        """A card's decision, as a new message until this adapter edits natively."""
        await self.send(OutboundMessage(address, text))

    async def send_file(self, file: OutboundFile) -> str:
        """Write the file under ``data_dir/files/cli/AGENT/`` (owner-only) and name its path
        in the session's answer, which `clawpen chat` prints."""
        if file.address not in self._waiting:
            raise SendError(f"no chat session {file.address} is waiting", permanent=True)
        if self.files_dir is None:
            raise SendError("files are not supported on cli here", permanent=True)
        folder = self.files_dir / file.address.chat
        platform_id = uuid.uuid4().hex
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{platform_id[:8]}-{file.name}"
        await asyncio.to_thread(_write_private, path, file.data)
        caption = f": {file.caption}" if file.caption else ""
        self._files.setdefault(file.address, []).append(f"[file {path}{caption}]")
        return platform_id

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        """The terminal shows its own "thinking" while it waits."""


def _write_private(path: Path, data: bytes) -> None:
    """A new file only its owner reads, in folders only its owner enters."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
