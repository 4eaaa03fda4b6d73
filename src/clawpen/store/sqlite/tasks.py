"""Tasks: a batch of one conversation's queued messages, claimed for one agent turn, and its end.

    task:  running (owner, lease) -> done | failed
           running again, resumes + 1, when its owner's lease ran out (a crash)

Finishing a task commits its reply in the same transaction; a job's run is closed with it
(``jobs.finish_job_run``). An agent's ``send_message`` is a task done at once with its reply,
and so is its ``send_file`` (the reply carries the file).
"""

from __future__ import annotations

import sqlite3
from functools import partial

from ...models import JOB_CHANNEL, Address, ClaimedTask, OutboundFile, Reply, TaskFile
from ..base import Lease
from . import rows
from .connection import Connection
from .jobs import finish_job_run
from .pairings import delivery_refused
from .replies import insert_reply, task_reply


class Tasks(Connection):
    """Agent turns: claimed, retried, finished, handed back."""

    async def claim_next_task(self, agent_id: str, lease: Lease, now: float) -> ClaimedTask | None:
        return await self._write(partial(_claim_next_task, agent_id, lease, now))

    async def task_files(self, task_id: int) -> list[TaskFile]:
        return await self._read_all(
            "SELECT m.platform_id, f.name, f.media_type, f.data FROM files f"
            " JOIN messages m ON m.id = f.message_id WHERE m.task_id=? ORDER BY f.id",
            (task_id,),
            rows.fields(TaskFile),
        )

    async def retry_task(self, task_id: int, lease: Lease) -> int:
        return await self._write(partial(_retry_task, task_id, lease))

    async def finish_task(
        self, task_id: int, text: str, error: str | None, lease: Lease, now: float
    ) -> Reply | None:
        return await self._write(partial(_finish_task, task_id, text, error, lease, now))

    async def release_task(self, task_id: int, owner: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE tasks SET owner=NULL, lease_until=0, resumes=resumes-1"
                " WHERE id=? AND owner=? AND status='running'",
                (task_id, owner),
            )
        )

    async def renew_leases(self, lease: Lease) -> None:
        def renew(db: sqlite3.Connection) -> None:
            args = (lease.until, lease.owner)
            db.execute("UPDATE tasks SET lease_until=? WHERE owner=? AND status='running'", args)
            db.execute("UPDATE replies SET lease_until=? WHERE owner=? AND status='pending'", args)

        await self._write(renew)

    async def release_leases(self, owner: str | None = None) -> int:
        def release(db: sqlite3.Connection) -> int:
            where = "(?1 IS NULL OR owner=?1)"
            freed = db.execute(
                f"UPDATE tasks SET owner=NULL, lease_until=0 WHERE status='running' AND {where}",
                (owner,),
            ).rowcount
            freed += db.execute(
                "UPDATE replies SET owner=NULL, lease_until=0, claim=NULL"
                f" WHERE status='pending' AND {where}",
                (owner,),
            ).rowcount
            return int(freed)

        return await self._write(release)

    async def record_agent_message(
        self, agent_id: str, address: Address, text: str, lease: Lease, now: float
    ) -> Reply | None:
        def record(db: sqlite3.Connection) -> Reply | None:
            if delivery_refused(db, agent_id, address) is not None:
                return None  # unpaired since the agent was allowed: nothing is queued
            task_id = db.execute(
                "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, created_at,"
                " finished_at) VALUES (?, ?, ?, ?, 'done', ?, ?)",
                (agent_id, address.channel, address.chat, address.thread, now, now),
            ).lastrowid
            insert_reply(db, task_id, address, "", text, lease, now)
            return task_reply(db, task_id)

        return await self._write(record)

    async def record_agent_file(
        self, agent_id: str, file: OutboundFile, lease: Lease, now: float, once: str | None = None
    ) -> Reply | None:
        def record(db: sqlite3.Connection) -> Reply | None:
            address = file.address
            if delivery_refused(db, agent_id, address) is not None:
                return None
            if once is not None:
                found = db.execute(
                    "SELECT replies.* FROM reply_files JOIN replies ON replies.id = reply_id"
                    " WHERE once=?",
                    (once,),
                ).fetchone()
                if found is not None:  # sent before this task was taken over: not again
                    return rows.reply(found)
            task_id = db.execute(
                "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, created_at,"
                " finished_at) VALUES (?, ?, ?, ?, 'done', ?, ?)",
                (agent_id, address.channel, address.chat, address.thread, now, now),
            ).lastrowid
            insert_reply(db, task_id, address, file.reply_to, file.caption, lease, now)
            reply_id = db.execute("SELECT id FROM replies WHERE task_id=?", (task_id,)).fetchone()
            db.execute("UPDATE replies SET has_file=1 WHERE id=?", (reply_id[0],))
            db.execute(
                "INSERT INTO reply_files (reply_id, name, media_type, size, data, once)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (reply_id[0], file.name, file.media_type, len(file.data), file.data, once),
            )
            return task_reply(db, task_id)

        return await self._write(record)


def _claim_next_task(
    agent_id: str, lease: Lease, now: float, db: sqlite3.Connection
) -> ClaimedTask | None:
    orphan = db.execute(
        "SELECT id FROM tasks WHERE agent_id=? AND status='running' AND lease_until < ?"
        " ORDER BY id LIMIT 1",
        (agent_id, now),
    ).fetchone()
    if orphan is not None:
        db.execute(
            "UPDATE tasks SET owner=?, lease_until=?, resumes=resumes+1 WHERE id=?",
            (lease.owner, lease.until, orphan[0]),
        )
        return _claimed(db, orphan[0], resumed=True)
    # the oldest waiting conversation that has no task at work: one conversation's tasks run
    # one after the other, in order, however many of its agent's run at once
    first = db.execute(
        "SELECT channel, chat_id, thread FROM messages m WHERE agent_id=? AND status='queued'"
        " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.agent_id=m.agent_id"
        " AND t.channel=m.channel AND t.chat_id=m.chat_id AND t.thread=m.thread"
        " AND t.status='running') ORDER BY id LIMIT 1",
        (agent_id,),
    ).fetchone()
    if first is None:
        return None
    channel, chat_id, thread = first
    task_id = db.execute(
        "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, owner, lease_until,"
        " created_at) VALUES (?,?,?,?, 'running', ?,?,?)",
        (agent_id, channel, chat_id, thread, lease.owner, lease.until, now),
    ).lastrowid
    db.execute(
        "UPDATE messages SET status='claimed', task_id=? WHERE agent_id=? AND channel=?"
        " AND chat_id=? AND thread=? AND status='queued'",
        (task_id, agent_id, channel, chat_id, thread),
    )
    db.execute(
        "UPDATE tasks SET reply_to=(SELECT platform_id FROM messages WHERE task_id=?1"
        " ORDER BY id DESC LIMIT 1) WHERE id=?1",
        (task_id,),
    )
    assert task_id is not None
    return _claimed(db, task_id, resumed=False)


def _claimed(db: sqlite3.Connection, task_id: int, resumed: bool) -> ClaimedTask:
    task = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
    lines = db.execute(
        "SELECT sender_id, text, platform_id,"
        " EXISTS (SELECT 1 FROM files WHERE message_id=messages.id)"
        " FROM messages WHERE task_id=? ORDER BY id",
        (task_id,),
    ).fetchall()
    return ClaimedTask(
        id=task_id,
        agent_id=task["agent_id"],
        address=rows.address(task),
        senders=tuple(row[0] for row in lines),
        texts=tuple(row[1] for row in lines),
        attempts=task["attempts"],
        resumes=task["resumes"],
        reply_to=task["reply_to"],
        resumed=resumed,
        platform_ids=tuple(row[2] for row in lines),
        has_files=any(row[3] for row in lines),
    )


def _retry_task(task_id: int, lease: Lease, db: sqlite3.Connection) -> int:
    db.execute(
        "UPDATE tasks SET attempts=attempts+1, lease_until=? WHERE id=?", (lease.until, task_id)
    )
    return int(db.execute("SELECT attempts FROM tasks WHERE id=?", (task_id,)).fetchone()[0])


def _finish_task(
    task_id: int, text: str, error: str | None, lease: Lease, now: float, db: sqlite3.Connection
) -> Reply | None:
    closed = db.execute(
        "UPDATE tasks SET status=?, finished_at=?, error=?, owner=NULL, lease_until=0"
        " WHERE id=? AND status='running' AND owner IS ?",
        ("failed" if error else "done", now, error, task_id, lease.owner),
    ).rowcount
    if not closed:
        return None  # no longer ours (or finished already): its owner answers it
    db.execute("UPDATE messages SET status='answered' WHERE task_id=?", (task_id,))
    # the agent has its files now (or never will): they need not fill the database
    db.execute(
        "DELETE FROM files WHERE message_id IN (SELECT id FROM messages WHERE task_id=?)",
        (task_id,),
    )
    task = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
    address = rows.address(task)
    reply_to = task["reply_to"]
    if address.channel == JOB_CHANNEL:  # a job's run: answered to its deliver_to, quoting none
        address, text, refused = finish_job_run(
            db, task["agent_id"], address.chat, text, error, now
        )
        reply_to = ""
    else:
        refused = None  # a chat's own answer; unpairing fails what is pending (pairings.leave_chat)
    insert_reply(db, task_id, address, reply_to, text, lease, now)
    if refused is not None:  # the chat left the job's agent while it ran: kept, never sent
        db.execute(
            "UPDATE replies SET status='failed', error=? WHERE task_id=?", (refused, task_id)
        )
    return task_reply(db, task_id)
