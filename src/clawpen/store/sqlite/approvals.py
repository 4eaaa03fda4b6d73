"""Approvals: requests for a person's decision on one exact action, the cards sent for them,
and the hosts an agent may reach from now on.

    approval:  pending -> allowed | denied   (a tap by an approver, the CLI, the dashboard)
               pending -> expired            (its time ran out)
               allowed -> allowed, used      (carried out, once)

A decision is taken only while the request is pending (and, for a person's, before it
expires): a second tap, or one after the timeout, changes nothing. A request, its cards (each a
reply with buttons, delivered by the outbox) and its task are committed together.
"""

from __future__ import annotations

import json
import sqlite3

from ...models import Address, Approval, Button
from ..base import Lease
from .connection import Connection
from .replies import insert_reply
from .rows import approval


class Approvals(Connection):
    async def open_approval(
        self,
        request: Approval,
        cards: list[tuple[Address, str, tuple[Button, ...]]],
        lease: Lease,
        now: float,
    ) -> tuple[Approval, bool]:
        """The request for the same action by the same task if there is one (a re-run finds
        its decision), else ``request`` committed with its cards; True when it is new."""

        def open_(db: sqlite3.Connection) -> tuple[Approval, bool]:
            found = db.execute(
                "SELECT * FROM approvals WHERE agent_id=? AND task_id IS ? AND action_hash=?"
                " AND NOT (kind='egress' AND used_at IS NOT NULL)"  # once: one connection
                " AND (task_id IS NOT NULL OR status='pending')"  # no task: asked each time
                " ORDER BY id DESC LIMIT 1",
                (request.agent_id, request.task_id, request.action_hash),
            ).fetchone()
            if found is not None:
                return approval(found), False
            row_id = db.execute(
                "INSERT INTO approvals (code, agent_id, task_id, kind, args, action_hash,"
                " summary, chat, approvers, status, created_at, expires_at)"
                " VALUES (?,?,?,?,?,?,?,?,?, 'pending', ?,?)",
                (
                    request.code,
                    request.agent_id,
                    request.task_id,
                    request.kind,
                    request.args,
                    request.action_hash,
                    request.summary,
                    request.chat,
                    json.dumps(list(request.approvers)),
                    now,
                    request.expires_at,
                ),
            ).lastrowid
            for address, text, buttons in cards:
                task_id = db.execute(
                    "INSERT INTO tasks (agent_id, channel, chat_id, thread, status, created_at,"
                    " finished_at) VALUES (?, ?, ?, ?, 'done', ?, ?)",
                    (request.agent_id, address.channel, address.chat, address.thread, now, now),
                ).lastrowid
                insert_reply(db, task_id, address, "", text, lease, now)
                db.execute(
                    "UPDATE replies SET buttons=? WHERE task_id=?",
                    (json.dumps([[b.label, b.data] for b in buttons]), task_id),
                )
                db.execute(
                    "INSERT INTO approval_cards (approval_id, reply_id)"
                    " SELECT ?, id FROM replies WHERE task_id=?",
                    (row_id, task_id),
                )
            return _one(db, "id=?", row_id), True

        return await self._write(open_)

    async def approval(self, approval_id: int) -> Approval | None:
        return await self._read(lambda db: _maybe(db, "id=?", approval_id))

    async def approval_by_code(self, code: str) -> Approval | None:
        return await self._read(lambda db: _maybe(db, "code=?", code))

    async def approvals(self, pending_only: bool = True, limit: int = 100) -> list[Approval]:
        where = "WHERE status='pending'" if pending_only else ""
        return await self._read_all(
            f"SELECT * FROM approvals {where} ORDER BY id DESC LIMIT ?", (limit,), approval
        )

    async def decide_approval(
        self, approval_id: int, status: str, choice: str, by: str, how: str, now: float
    ) -> Approval | None:
        """Record the decision if the request is still open to it: pending, and for a
        person's decision not yet expired. Returns the decided request, or None when it
        changed nothing. "Allow from now on" an egress host keeps the host in the same
        transaction."""

        def decide(db: sqlite3.Connection) -> Approval | None:
            changed = db.execute(
                "UPDATE approvals SET status=?, choice=?, decided_by=?, how=?, decided_at=?"
                " WHERE id=? AND status='pending' AND (?='expired' OR expires_at > ?)",
                (status, choice, by, how, now, approval_id, status, now),
            ).rowcount
            if not changed:
                return None
            decided = _one(db, "id=?", approval_id)
            if status == "allowed" and choice == "always" and decided.kind == "egress":
                target = json.loads(decided.args)
                db.execute(
                    "INSERT OR IGNORE INTO egress_allowed (agent_id, host_port, approval_id,"
                    " created_at) VALUES (?,?,?,?)",
                    (decided.agent_id, f"{target['host']}:{target['port']}", approval_id, now),
                )
            return decided

        return await self._write(decide)

    async def use_approval(self, approval_id: int, now: float) -> bool:
        """Mark an allowed request carried out; True only the first time."""
        return bool(
            await self._write(
                lambda db: (
                    db.execute(
                        "UPDATE approvals SET used_at=? WHERE id=? AND status='allowed'"
                        " AND used_at IS NULL",
                        (now, approval_id),
                    ).rowcount
                )
            )
        )

    async def approval_cards(self, approval_id: int) -> list[tuple[Address, str]]:
        """Where a request's cards went, and the platform id of each (empty: not yet sent)."""

        def cards(db: sqlite3.Connection) -> list[tuple[Address, str]]:
            rows = db.execute(
                "SELECT r.channel, r.chat_id, r.thread, coalesce(r.platform_ids, '')"
                " FROM approval_cards c JOIN replies r ON r.id = c.reply_id"
                " WHERE c.approval_id=? ORDER BY r.id",
                (approval_id,),
            ).fetchall()
            return [(Address(r[0], r[1], r[2]), str(r[3]).rpartition(",")[2]) for r in rows]

        return await self._read(cards)

    async def egress_allowed(self, agent_id: str | None = None) -> list[tuple[str, str, float]]:
        """(agent, host:port, since) of the hosts agents may reach because someone said so."""
        sql = "SELECT agent_id, host_port, created_at FROM egress_allowed"
        args: tuple[object, ...] = ()
        if agent_id is not None:
            sql, args = sql + " WHERE agent_id=?", (agent_id,)
        return await self._read_all(sql + " ORDER BY agent_id, host_port", args, _host_row)

    async def revoke_egress(self, agent_id: str, host_port: str) -> bool:
        return bool(
            await self._write(
                lambda db: (
                    db.execute(
                        "DELETE FROM egress_allowed WHERE agent_id=? AND host_port=?",
                        (agent_id, host_port),
                    ).rowcount
                )
            )
        )


def _host_row(row: sqlite3.Row) -> tuple[str, str, float]:
    return str(row[0]), str(row[1]), float(row[2])


def _maybe(db: sqlite3.Connection, where: str, value: object) -> Approval | None:
    row = db.execute(f"SELECT * FROM approvals WHERE {where}", (value,)).fetchone()
    return None if row is None else approval(row)


def _one(db: sqlite3.Connection, where: str, value: object) -> Approval:
    found = _maybe(db, where, value)
    assert found is not None
    return found
