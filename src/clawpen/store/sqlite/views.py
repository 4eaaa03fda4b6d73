"""Reads for the status command and the dashboard: the latest messages and tasks, and how many
rows stand in each state."""

from __future__ import annotations

import sqlite3

from ..base import RecentMessage, RecentTask
from .connection import Connection
from .rows import fields

RECENT_TEXT = 300  # characters of a message's text the dashboard is given


class Views(Connection):
    """What operators look at."""

    async def recent_messages(self, limit: int) -> list[RecentMessage]:
        # an answered message is shown as its reply fared, as `status` counts it: delivered
        # ("answered"), still being sent ("replying") or not delivered ("undelivered": the
        # send failed, or the platform said later that it failed)
        return await self._read_all(
            "SELECT m.id, m.channel, m.chat_id, m.sender_id, substr(m.text, 1, ?), m.received_at,"
            " CASE WHEN m.status != 'answered' OR r.status IS NULL THEN m.status"
            " WHEN r.status = 'failed' OR EXISTS (SELECT 1 FROM delivery_statuses d"
            "  WHERE d.channel = r.channel AND d.chat_id = r.chat_id AND d.status = 'failed'"
            "  AND ',' || r.platform_ids || ',' LIKE '%,' || d.platform_id || ',%')"
            " THEN 'undelivered' WHEN r.status = 'sent' THEN m.status ELSE 'replying' END,"
            " m.agent_id FROM messages m LEFT JOIN replies r ON r.task_id = m.task_id"
            " ORDER BY m.id DESC LIMIT ?",
            (RECENT_TEXT, limit),
            fields(RecentMessage),
        )

    async def recent_tasks(self, limit: int) -> list[RecentTask]:
        return await self._read_all(
            "SELECT id, agent_id, channel, chat_id, status, created_at, finished_at, error"
            " FROM tasks WHERE agent_id != '' ORDER BY id DESC LIMIT ?",
            (limit,),
            fields(RecentTask),
        )

    async def counts(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            for table in ("messages", "tasks", "replies"):
                # a refusal's answer is a task of its own, failed with error 'refused': it is
                # counted as refused, not as a task that failed
                refused = "error = 'refused'" if table == "tasks" else "0"
                for status, n in db.execute(
                    f"SELECT CASE WHEN {refused} THEN 'refused' ELSE status END, COUNT(*)"
                    f" FROM {table} GROUP BY 1"
                ):
                    out[f"{table}.{status}"] = n
            out["strangers"] = db.execute("SELECT COUNT(*) FROM strangers").fetchone()[0]
            return out

        return await self._read(count)
