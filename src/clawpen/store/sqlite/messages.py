"""Messages in: a chat's messages (with their routing decision and files), in-chat commands and
each chat's session number, and strangers (unpaired chats: who, when, how much, never the text).

    inbound message:  queued -> claimed (into a task) -> answered | rejected
    command:          answered at once, with its reply (and, for /new, the next session number)
    stranger:         recorded -> expired
"""

from __future__ import annotations

import sqlite3
from functools import partial

from ...models import Decision, InboundMessage, Rejection, Stranger
from ..base import Lease, StrangerChat
from .connection import Connection
from .replies import insert_reply


class Messages(Connection):
    """What arrives from the chats."""

    async def record_inbound(
        self, message: InboundMessage, decision: Decision, lease: Lease, now: float
    ) -> int | None:
        return await self._write(partial(insert_inbound, message, decision, lease, now))

    async def record_command(
        self,
        message: InboundMessage,
        agent_id: str,
        answer: str,
        new_session: bool,
        lease: Lease,
        now: float,
    ) -> int | None:
        return await self._write(
            partial(_record_command, message, agent_id, answer, new_session, lease, now)
        )

    async def session_number(self, agent_id: str, conversation: str) -> int:
        def read(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT number FROM sessions WHERE agent_id=? AND conversation=?",
                (agent_id, conversation),
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._read(read)

    async def record_stranger(self, stranger: Stranger) -> None:
        await self._write(partial(_record_stranger, stranger))

    async def expire_strangers(self, before: float) -> int:
        return await self._write(
            lambda db: db.execute("DELETE FROM strangers WHERE received_at < ?", (before,)).rowcount
        )

    async def stranger_chats(self, since: float) -> list[StrangerChat]:
        def read(db: sqlite3.Connection) -> list[StrangerChat]:
            rows = db.execute(
                "SELECT channel || ':' || chat_id, COUNT(*), COUNT(DISTINCT sender_id),"
                " MAX(received_at) FROM strangers WHERE received_at >= ?"
                " GROUP BY channel, chat_id ORDER BY MAX(received_at) DESC",
                (since,),
            ).fetchall()
            chats = []
            for chat, messages, senders, last_seen in rows:
                channel, chat_id = chat.split(":", 1)
                last = db.execute(
                    "SELECT sender_id FROM strangers WHERE channel=? AND chat_id=?"
                    " ORDER BY received_at DESC, id DESC LIMIT 1",
                    (channel, chat_id),
                ).fetchone()[0]
                chats.append(StrangerChat(chat, messages, senders, last, last_seen))
            return chats

        return await self._read(read)


# -- the writes, each run on the writer thread inside its own savepoint --------------------------


def insert_inbound(
    message: InboundMessage, decision: Decision, lease: Lease, now: float, db: sqlite3.Connection
) -> int | None:
    address = message.address
    if isinstance(decision, Rejection):
        status, agent, reason = "rejected", None, decision.reason
    else:
        status, agent, reason = "queued", decision.agent_id, None
    cursor = db.execute(
        "INSERT OR IGNORE INTO messages (channel, chat_id, thread, sender_id, platform_id,"
        " reply_to, text, received_at, status, agent_id, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            address.channel,
            address.chat,
            address.thread,
            message.sender_id,
            message.platform_id,
            message.reply_to,
            message.text,
            message.received_at,
            status,
            agent,
            reason,
        ),
    )
    if not cursor.rowcount:
        return None
    row = cursor.lastrowid
    if not isinstance(decision, Rejection):
        db.executemany(
            "INSERT INTO files (message_id, name, media_type, data) VALUES (?,?,?,?)",
            [(row, f.name, f.media_type, f.data) for f in message.attachments],
        )
    if isinstance(decision, Rejection) and decision.answer:
        # A refused message still gets its answer, through the same reply path as any other.
        task_id = db.execute(
            "INSERT INTO tasks (agent_id, channel, chat_id, thread, reply_to, status, created_at,"
            " finished_at, error) VALUES ('', ?, ?, ?, ?, 'failed', ?, ?, 'refused')",
            (address.channel, address.chat, address.thread, message.platform_id, now, now),
        ).lastrowid
        db.execute("UPDATE messages SET task_id=? WHERE id=?", (task_id, row))
        insert_reply(db, task_id, address, message.platform_id, decision.answer, lease, now)
    return row


def _record_command(
    message: InboundMessage,
    agent_id: str,
    answer: str,
    new_session: bool,
    lease: Lease,
    now: float,
    db: sqlite3.Connection,
) -> int | None:
    """An in-chat command: stored and answered like a refusal (never queued for the agent),
    then marked answered; ``/new`` moves the chat's session on in the same transaction."""
    row = insert_inbound(message, Rejection("command", answer), lease, now, db)
    if row is None:
        return None
    db.execute("UPDATE messages SET status='answered', agent_id=? WHERE id=?", (agent_id, row))
    db.execute(
        "UPDATE tasks SET status='done', error=NULL WHERE id=(SELECT task_id FROM messages"
        " WHERE id=?)",
        (row,),
    )
    if new_session:
        db.execute(
            "INSERT INTO sessions (agent_id, conversation, number, started_at) VALUES (?,?,1,?)"
            " ON CONFLICT (agent_id, conversation) DO UPDATE SET number=number+1,"
            " started_at=excluded.started_at",
            (agent_id, str(message.address), now),
        )
    return row


def _record_stranger(stranger: Stranger, db: sqlite3.Connection) -> None:
    db.execute(
        "INSERT INTO strangers (channel, chat_id, sender_id, size, received_at) VALUES (?,?,?,?,?)",
        (
            stranger.address.channel,
            stranger.address.chat,
            stranger.sender_id,
            stranger.size,
            stranger.received_at,
        ),
    )
