"""From ``sqlite3.Row`` to the models: one mapper per model, and the one read that uses them.

A mapper takes one row of the query it is named for (``SELECT *`` of its table, or columns
listed in the order of the model's fields) and returns the model. ``read_all`` runs a query
and maps every row, so a read is one statement and one mapper::

    read_all(db, "SELECT * FROM replies WHERE channel=?", ("telegram",), reply)
    read_all(db, "SELECT platform_id, name, media_type, data FROM files", (), fields(TaskFile))
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...models import Address, Approval, Button, Job, JobRun, JobSpec, Reply

T = TypeVar("T")
Args = Sequence[object]
Mapper = Callable[[sqlite3.Row], T]


def read_all(db: sqlite3.Connection, sql: str, args: Args, mapper: Mapper[T]) -> list[T]:
    return [mapper(row) for row in db.execute(sql, args).fetchall()]


def fields(model: Callable[..., T]) -> Mapper[T]:
    """The mapper of a query that selects ``model``'s fields in their order."""

    def mapper(row: sqlite3.Row) -> T:
        return model(*row)

    return mapper


def key_value(row: sqlite3.Row) -> tuple[Any, Any]:
    """A two-column row as a key and its value: ``dict(read_all(db, sql, args, key_value))``."""
    return row[0], row[1]


def address(row: sqlite3.Row) -> Address:
    """Where a message, task or reply row belongs (its ``channel``, ``chat_id``, ``thread``)."""
    return Address(row["channel"], row["chat_id"], row["thread"])


def deliver_to(row: sqlite3.Row) -> Address:
    """Where a job's (or a job run's) answer goes."""
    return Address(row["deliver_channel"], row["deliver_chat"], row["deliver_thread"])


def reply(row: sqlite3.Row) -> Reply:
    return Reply(
        id=row["id"],
        task_id=row["task_id"],
        address=address(row),
        text=row["text"],
        reply_to=row["reply_to"],
        attempts=row["attempts"],
        chunks_sent=row["chunks_sent"],
        next_attempt_at=row["next_attempt_at"],
        owner=row["owner"],
        lease_until=row["lease_until"],
        stranger=bool(row["stranger"]),
        buttons=buttons(row["buttons"]),
        has_file=bool(row["has_file"]),
    )


def buttons(stored: str) -> tuple[Button, ...]:
    """A card's buttons, as ``replies.buttons`` holds them (JSON pairs; "" for none)."""
    return tuple(Button(str(label), str(data)) for label, data in json.loads(stored or "[]"))


def approval(row: sqlite3.Row) -> Approval:
    return Approval(
        id=row["id"],
        code=row["code"],
        agent_id=row["agent_id"],
        task_id=row["task_id"],
        kind=row["kind"],
        args=row["args"],
        action_hash=row["action_hash"],
        summary=row["summary"],
        chat=row["chat"],
        approvers=tuple(json.loads(row["approvers"])),
        status=row["status"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        choice=row["choice"],
        decided_by=row["decided_by"],
        how=row["how"],
        decided_at=row["decided_at"],
        used_at=row["used_at"],
    )


def job(row: sqlite3.Row) -> Job:
    spec = JobSpec(
        name=row["name"],
        agent_id=row["agent_id"],
        kind=row["kind"],
        spec=row["spec"],
        timezone=row["timezone"],
        task=row["task"],
        deliver_to=deliver_to(row),
        misfire=row["misfire"],
        max_failures=row["max_failures"],
        source=row["source"],
    )
    return Job(
        spec=spec,
        state=row["state"],
        next_run=row["next_run"],
        failures=row["failures"],
        running=row["running_run"] is not None,
        paused_reason=row["paused_reason"],
        last_status=row["last_status"] or "",
        last_error=row["last_error"] or "",
        last_run_at=row["last_at"],
    )


def job_run(row: sqlite3.Row) -> JobRun:
    return JobRun(
        id=row["id"],
        job=row["job"],
        scheduled_for=row["scheduled_for"],
        fired_at=row["fired_at"],
        status=row["status"],
        error=row["error"],
        finished_at=row["finished_at"],
        manual=bool(row["manual"]),
    )
