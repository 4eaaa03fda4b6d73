"""Scheduled jobs and their runs: the config's jobs kept in step with the file, an agent's own,
the scheduler's firings carried out in one transaction, and a run closed with its task.

    job:      active (next_run) -> paused (by hand, after max_failures, or when its chat left
              its agent) | done (`at`); named per agent: (agent, name)
    job run:  running (queued as a message of conversation job:NAME) -> ok | failed;
              or skipped (misfire: skip; chat unpaired); one running run per job
"""

from __future__ import annotations

import sqlite3
from functools import partial

from ...models import JOB_CHANNEL, Address, Job, JobFiring, JobRun, JobSpec
from . import rows
from .connection import Connection
from .pairings import delivery_refused


class Jobs(Connection):
    """What runs on a schedule."""

    async def sync_config_jobs(
        self, jobs: list[tuple[JobSpec, float | None]], now: float
    ) -> dict[str, list[str]]:
        return await self._write(partial(_sync_config_jobs, jobs, now))

    async def add_job(self, job: JobSpec, next_run: float | None, now: float) -> bool:
        return await self._write(lambda db: _insert_job(db, job, next_run, now))

    async def remove_job(self, agent_id: str, name: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            gone = db.execute(
                "DELETE FROM jobs WHERE agent_id=? AND name=?", (agent_id, name)
            ).rowcount
            if gone:  # its finished history goes with it; a run in progress still answers
                _forget_runs(db, agent_id, name)
            return bool(gone)

        return await self._write(remove)

    async def jobs(self, agent_id: str | None = None) -> list[Job]:
        return await self._read_all(
            f"{_JOB_SELECT} WHERE ?1 IS NULL OR j.agent_id=?1 ORDER BY j.name, j.agent_id",
            (agent_id,),
            rows.job,
        )

    async def set_job_state(
        self, agent_id: str, name: str, state: str, next_run: float | None, reason: str = ""
    ) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE jobs SET state=?1, paused_reason=?2,"
                " failures=CASE WHEN ?1='active' THEN 0 ELSE failures END,"
                " next_run=coalesce(?3, next_run) WHERE agent_id=?4 AND name=?5",
                (state, reason, next_run, agent_id, name),
            ).rowcount
            return bool(changed)

        return await self._write(update)

    async def due_jobs(self, now: float, limit: int) -> list[Job]:
        return await self._read_all(
            f"{_JOB_SELECT_BARE} WHERE j.state='active' AND j.next_run <= ?"
            " AND j.running_run IS NULL ORDER BY j.next_run LIMIT ?",
            (now, limit),
            rows.job,
        )

    async def next_due(self) -> float | None:
        def read(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT min(next_run) FROM jobs WHERE state='active' AND running_run IS NULL"
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._read(read)

    async def fire_jobs(self, firings: list[JobFiring], now: float) -> list[tuple[str, str]]:
        return await self._write(partial(_fire_jobs, firings, now))

    async def job_runs(self, agent_id: str, name: str, limit: int = 20) -> list[JobRun]:
        return await self._read_all(
            "SELECT * FROM job_runs WHERE agent_id=? AND job=? ORDER BY id DESC LIMIT ?",
            (agent_id, name, limit),
            rows.job_run,
        )


_JOB_SELECT_BARE = (
    "SELECT j.*, NULL AS last_status, NULL AS last_error, NULL AS last_at FROM jobs j"
)
_JOB_SELECT = (
    "SELECT j.*, r.status AS last_status, r.error AS last_error, r.fired_at AS last_at FROM jobs j"
    " LEFT JOIN job_runs r ON r.id ="
    " (SELECT max(id) FROM job_runs WHERE agent_id=j.agent_id AND job=j.name)"
)
_JOB_DEFINITION = (
    "agent_id",
    "kind",
    "spec",
    "timezone",
    "task",
    "deliver_channel",
    "deliver_chat",
    "deliver_thread",
    "misfire",
    "max_failures",
)


def _job_values(job: JobSpec) -> tuple[object, ...]:
    to = job.deliver_to
    return (
        job.agent_id,
        job.kind,
        job.spec,
        job.timezone,
        job.task,
        to.channel,
        to.chat,
        to.thread,
        job.misfire,
        job.max_failures,
    )


def _insert_job(db: sqlite3.Connection, job: JobSpec, next_run: float | None, now: float) -> bool:
    columns = ", ".join(_JOB_DEFINITION)
    inserted = db.execute(
        f"INSERT OR IGNORE INTO jobs (name, {columns}, source, state, next_run, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job.name,
            *_job_values(job),
            job.source,
            "active" if next_run is not None else "done",
            next_run,
            now,
        ),
    ).rowcount
    return bool(inserted)


def _sync_config_jobs(
    jobs: list[tuple[JobSpec, float | None]], now: float, db: sqlite3.Connection
) -> dict[str, list[str]]:
    """The config file's jobs, exactly: new ones added, changed ones updated (their history
    kept, their next run worked out anew), the ones no longer in the file removed."""
    done: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    keys = [(job.agent_id, job.name) for job, _ in jobs]
    for agent_id, name in db.execute(
        "SELECT agent_id, name FROM jobs WHERE source='config' ORDER BY name, agent_id"
    ).fetchall():
        if (agent_id, name) not in keys:
            db.execute("DELETE FROM jobs WHERE agent_id=? AND name=?", (agent_id, name))
            _forget_runs(db, agent_id, name)
            done["removed"].append(f"{agent_id}/{name}")
    columns = ", ".join(_JOB_DEFINITION)
    for job, next_run in jobs:
        row = db.execute(
            f"SELECT {columns}, source FROM jobs WHERE agent_id=? AND name=?",
            (job.agent_id, job.name),
        ).fetchone()
        if row is None:
            _insert_job(db, job, next_run, now)
            done["added"].append(f"{job.agent_id}/{job.name}")
        elif tuple(row)[:-1] != _job_values(job) or row["source"] != "config":
            sets = ", ".join(f"{c}=?" for c in _JOB_DEFINITION)
            db.execute(
                f"UPDATE jobs SET {sets}, source='config', next_run=?, failures=0,"
                " paused_reason='', state=? WHERE agent_id=? AND name=?",
                (
                    *_job_values(job),
                    next_run,
                    "active" if next_run is not None else "done",
                    job.agent_id,
                    job.name,
                ),
            )
            done["changed"].append(f"{job.agent_id}/{job.name}")
    return done


def _forget_runs(db: sqlite3.Connection, agent_id: str, name: str) -> None:
    """A removed job's finished history; a run in progress still answers."""
    db.execute(
        "DELETE FROM job_runs WHERE agent_id=? AND job=? AND status != 'running'", (agent_id, name)
    )


def _fire_jobs(
    firings: list[JobFiring], now: float, db: sqlite3.Connection
) -> list[tuple[str, str]]:
    """Carry out the scheduler's decisions: each job's run is recorded, queued as a message of
    its own conversation and its next run advanced, all in this one transaction, and only if
    the job is still as the scheduler saw it (due at that time, no run of it going). A job
    whose chat is no longer paired with its agent does not run: it is paused, saying why."""
    fired: list[tuple[str, str]] = []
    for firing in firings:
        key = (firing.agent_id, firing.name)
        job = db.execute("SELECT * FROM jobs WHERE agent_id=? AND name=?", key).fetchone()
        if job is None or job["running_run"] is not None:
            continue
        manual = firing.due is None
        if not manual and (job["state"] != "active" or job["next_run"] != firing.due):
            continue  # changed or fired meanwhile
        refused = delivery_refused(db, job["agent_id"], rows.deliver_to(job))
        if refused is not None:
            reason = _job_unpaired(refused, job["agent_id"], job["name"], rows.deliver_to(job))
            _pause_unpaired(db, job, reason, now)
            continue
        if not manual:
            db.execute(
                "UPDATE jobs SET next_run=?, state=? WHERE agent_id=? AND name=?",
                (firing.next_run, "active" if firing.next_run is not None else "done", *key),
            )
        scheduled = now if manual else float(firing.due or now)
        run_id = _record_run(
            db,
            job,
            scheduled,
            now,
            "running" if firing.run else "skipped",
            "" if firing.run else f"missed by {now - scheduled:.0f}s (misfire: skip)",
            manual,
        )
        if not firing.run:
            continue
        message_id = db.execute(
            "INSERT INTO messages (channel, chat_id, thread, sender_id, platform_id, text,"
            " received_at, status, agent_id) VALUES (?,?, '', 'scheduler', ?,?,?, 'queued', ?)",
            (JOB_CHANNEL, job["name"], f"run-{run_id}", job["task"], now, job["agent_id"]),
        ).lastrowid
        db.execute("UPDATE job_runs SET message_id=? WHERE id=?", (message_id, run_id))
        db.execute("UPDATE jobs SET running_run=? WHERE agent_id=? AND name=?", (run_id, *key))
        fired.append((job["name"], job["agent_id"]))
    return fired


def _record_run(
    db: sqlite3.Connection,
    job: sqlite3.Row,
    scheduled: float,
    now: float,
    status: str,
    error: str,
    manual: bool,
) -> int:
    run_id = db.execute(
        "INSERT INTO job_runs (agent_id, job, scheduled_for, fired_at, status, error, manual,"
        " deliver_channel, deliver_chat, deliver_thread) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            job["agent_id"],
            job["name"],
            scheduled,
            now,
            status,
            error,
            manual,
            job["deliver_channel"],
            job["deliver_chat"],
            job["deliver_thread"],
        ),
    ).lastrowid
    assert run_id is not None
    return run_id


def _job_unpaired(refused: str, agent_id: str, name: str, to: Address) -> str:
    return (
        f"{refused}; pair it again (clawpen pair {to.chat_address} {agent_id}) and"
        f" clawpen jobs resume {agent_id}/{name}, or remove the job"
    )


def _pause_unpaired(db: sqlite3.Connection, job: sqlite3.Row, reason: str, now: float) -> None:
    """The job's chat left its agent: a skipped run says so in its history, and the job waits
    paused (with the reason ``clawpen jobs list`` shows) until the operator decides."""
    _record_run(db, job, float(job["next_run"] or now), now, "skipped", reason, False)
    db.execute(
        "UPDATE jobs SET state='paused', paused_reason=? WHERE agent_id=? AND name=?",
        (reason, job["agent_id"], job["name"]),
    )


def finish_job_run(
    db: sqlite3.Connection, agent_id: str, name: str, text: str, error: str | None, now: float
) -> tuple[Address, str, str | None]:
    """Close a job's run with its task: count a failure (pausing the job after too many in a
    row, and saying so in the answer) or clear the count; the answer goes to deliver_to, unless
    that chat is no longer paired with the agent: then the run fails, the job pauses, and the
    third value says why the answer must not be sent."""
    run = db.execute(
        "SELECT * FROM job_runs WHERE agent_id=? AND job=? AND status='running' ORDER BY id"
        " LIMIT 1",
        (agent_id, name),
    ).fetchone()
    if run is None:  # pragma: no cover  (a run is recorded before its message exists)
        raise sqlite3.IntegrityError(f"no running run of job {agent_id}/{name}")
    address = rows.deliver_to(run)
    refused = delivery_refused(db, agent_id, address)
    if refused is not None:
        error = refused
    db.execute(
        "UPDATE job_runs SET status=?, error=?, finished_at=? WHERE id=?",
        ("failed" if error else "ok", error or "", now, run["id"]),
    )
    key = (agent_id, name)
    db.execute(
        "UPDATE jobs SET running_run=NULL, failures=CASE WHEN ? THEN failures+1 ELSE 0 END"
        " WHERE agent_id=? AND name=? AND running_run=?",
        (error is not None, *key, run["id"]),
    )
    job = db.execute(
        "SELECT failures, max_failures, state FROM jobs WHERE agent_id=? AND name=?", key
    ).fetchone()
    if refused is not None:
        db.execute(
            "UPDATE jobs SET state='paused', paused_reason=? WHERE agent_id=? AND name=?",
            (_job_unpaired(refused, agent_id, name, address), *key),
        )
        return address, text, refused
    if (
        error
        and job is not None
        and job["state"] == "active"
        and job["failures"] >= job["max_failures"]
    ):
        reason = f"paused after {job['failures']} failed runs in a row"
        db.execute(
            "UPDATE jobs SET state='paused', paused_reason=? WHERE agent_id=? AND name=?",
            (reason, *key),
        )
        text += (
            f"\n\nThe job {name} failed {job['failures']} times in a row, so it is paused."
            f" Resume it with: clawpen jobs resume {agent_id}/{name}"
        )
    return address, text, None
