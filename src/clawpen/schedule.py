"""When a job runs: pure time math, no I/O, ``now`` always an argument.

A schedule is one of three kinds, each read in the job's IANA time zone and turned into UTC
epoch seconds, the only form a next run is stored in:

* ``cron``: ``"0 9 * * *"`` (``cronsim``). A wall-clock time that a spring-forward skips runs
  once, at the next valid minute (02:30 -> 03:00); one that a fall-back repeats runs once, the
  first time.
* ``every``: ``"15m"``, ``"1h30m"``, ``"2d"``: real elapsed time, keeping its phase.
* ``at``: ``"2026-12-01T09:00"``: once.

``plan`` is the misfire decision: a run found due late (after downtime, or behind a run of its
own that was still going) runs once (``run_once``) or not at all (``skip``), and the next run
is the first one after now, so a long outage never becomes a burst of catch-up runs.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ClawpenError
from .models import Address, Job, JobRun, JobSpec

Kind = Literal["cron", "every", "at"]
Misfire = Literal["run_once", "skip"]
GRACE = 60.0  # seconds late that still count as on time (a busy minute, a slow start)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EVERY = re.compile(r"(?:(\d{1,6})([smhdw]))+")
_EVERY_PART = re.compile(r"(\d{1,6})([smhdw])")


class ScheduleError(ValueError):
    """A schedule that cannot be understood; the message says which part and why."""


class JobExists(ClawpenError):
    """The agent has a job of that name already (names are per agent)."""


@dataclass(frozen=True)
class Schedule:
    kind: Kind
    spec: str  # the cron expression, the interval in seconds, or the local ISO time
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        if self.kind == "every":
            return f"every {format_every(int(self.spec))}"
        if self.kind == "at":
            return f"at {self.spec}"
        return self.spec


@dataclass(frozen=True)
class Firing:
    """What to do with a job found due: run it or not, and when it is due next (None: never)."""

    run: bool
    next_run: float | None
    late: float  # seconds past the time it was due


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Berlin"
        ) from None


def parse_every(text: str | int) -> int:
    """``"15m"`` -> 900, ``"1h30m"`` -> 5400, ``90`` -> 90 (seconds)."""
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    elif isinstance(text, str) and _EVERY.fullmatch(text.strip().replace(" ", "")):
        parts = _EVERY_PART.findall(text.replace(" ", ""))
        seconds = sum(int(n) * _UNITS[unit] for n, unit in parts)
    else:
        raise ScheduleError(f"{text!r} is not an interval; write e.g. 30s, 15m, 1h30m, 2d")
    if seconds < 1:
        raise ScheduleError("an interval must be at least 1s")
    return seconds


def format_every(seconds: int) -> str:
    """900 -> ``"15m"``, 5400 -> ``"1h30m"``."""
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def parse_at(value: str | datetime, tz: str) -> datetime:
    """The local time ``value`` in ``tz`` as an aware datetime (an offset in it wins)."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ScheduleError(
                f"{value!r} is not a date and time; write e.g. 2026-12-01T09:00"
            ) from None
    if moment.tzinfo is not None:
        return moment
    return _valid_local(moment, zone(tz))


def _valid_local(naive: datetime, tz: ZoneInfo) -> datetime:
    """A local time made aware; one that a spring-forward skips becomes the next valid minute,
    one that a fall-back repeats is its first occurrence."""
    for minutes in range(0, 24 * 60):
        candidate = (naive + timedelta(minutes=minutes)).replace(tzinfo=tz, fold=0)
        back = candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
        if back == candidate.replace(tzinfo=None):
            if minutes:  # skipped: the first valid minute after the gap
                return candidate.replace(second=0, microsecond=0)
            return candidate
    raise ScheduleError(f"{naive.isoformat()} does not exist in {tz.key}")  # pragma: no cover


def parse(
    schedule: str | None = None,
    every: str | int | None = None,
    at: str | datetime | None = None,
    timezone: str = "UTC",
) -> Schedule:
    """Exactly one of ``schedule`` (cron), ``every``, ``at``, read in ``timezone``."""
    given = [k for k, v in (("schedule", schedule), ("every", every), ("at", at)) if v is not None]
    if len(given) != 1:
        raise ScheduleError("give exactly one of schedule (cron), every or at")
    zone(timezone)
    if schedule is not None:
        expression = " ".join(str(schedule).split())
        try:
            CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ScheduleError(f"{schedule!r} is not a cron expression ({exc})") from None
        if len(expression.split()) != 5:
            raise ScheduleError(f"{schedule!r}: write five cron fields (minute hour day month dow)")
        return Schedule("cron", expression, timezone)
    if every is not None:
        return Schedule("every", str(parse_every(every)), timezone)
    assert at is not None
    moment = parse_at(at, timezone)
    local = moment.astimezone(zone(timezone)).replace(tzinfo=None)
    precision = "minutes" if not local.second else "seconds"
    return Schedule("at", local.isoformat(timespec=precision), timezone)


def interval(schedule: Schedule) -> float | None:
    """The shortest time between two runs, for limits: None for a one-shot job."""
    if schedule.kind == "every":
        return float(schedule.spec)
    if schedule.kind == "at":
        return None
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: a week of runs shows the shortest gap
    runs = CronSim(schedule.spec, start)
    times = [next(runs).timestamp() for _ in range(64)]
    return min(b - a for a, b in itertools.pairwise(times))


def first_run(schedule: Schedule, now: float) -> float | None:
    """When a job created at ``now`` first runs: an ``at`` in the past is due at once."""
    if schedule.kind == "at":
        return parse_at(schedule.spec, schedule.timezone).timestamp()
    if schedule.kind == "every":
        return now + float(schedule.spec)
    return next_after(schedule, now)


def next_after(schedule: Schedule, after: float, previous: float | None = None) -> float | None:
    """The first run strictly after ``after``; an interval keeps the phase of ``previous``."""
    if schedule.kind == "at":
        return None
    if schedule.kind == "every":
        step = float(schedule.spec)
        base = after if previous is None else previous
        if previous is None:
            return base + step
        return previous + step * (int((after - previous) // step) + 1)
    tz = schedule.zone
    start = datetime.fromtimestamp(after, UTC).astimezone(tz)
    # cronsim's first match is at or after ``start`` once seconds are dropped: step past it
    runs = CronSim(schedule.spec, start)
    for moment in runs:
        if moment.timestamp() > after:
            return moment.timestamp()
    return None  # pragma: no cover  (cronsim never ends)


def plan(
    schedule: Schedule,
    due: float,
    now: float,
    misfire: Misfire = "run_once",
    following: float | None = None,
    grace: float = GRACE,
) -> Firing:
    """Decide about a job that was due at ``due`` and is looked at ``now`` (>= due).
    ``following``: the run after ``due``, if already worked out (it is used when still ahead).

    >>> plan(Schedule("every", "60"), due=1000, now=1005)
    Firing(run=True, next_run=1060.0, late=5)
    """
    late = now - due
    if following is None or following <= now:
        following = next_after(schedule, now, previous=due)
    run = late <= grace or misfire == "run_once"
    return Firing(run, following, late)


# -- a job's spec from what a user wrote (config, CLI, an agent's tool) ------------------------

JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_TASK_CHARS = 4000


def make_spec(
    name: str,
    agent_id: str,
    task: str,
    deliver_to: Address,
    schedule: str | None = None,
    every: str | int | None = None,
    at: str | datetime | None = None,
    timezone: str = "UTC",
    misfire: str = "run_once",
    max_failures: int = 5,
    source: str = "cli",
) -> JobSpec:
    """A job's spec from what a user wrote; raises ``ScheduleError`` (a ``ValueError``) naming
    what is wrong."""
    if not re.fullmatch(JOB_NAME, name):
        raise ScheduleError(
            f"job name {name[:80]!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    if not task.strip():
        raise ScheduleError("task: say what the agent should do")
    if len(task) > MAX_TASK_CHARS:
        raise ScheduleError(f"task: over {MAX_TASK_CHARS} characters")
    if misfire not in ("run_once", "skip"):
        raise ScheduleError(f"misfire: {misfire!r}; use run_once or skip")
    if max_failures < 1:
        raise ScheduleError("max_failures: at least 1")
    parsed = parse(schedule, every, at, timezone)
    return JobSpec(
        name=name,
        agent_id=agent_id,
        kind=parsed.kind,
        spec=parsed.spec,
        timezone=parsed.timezone,
        task=task,
        deliver_to=deliver_to,
        misfire=misfire,
        max_failures=max_failures,
        source=source,
    )


def schedule_of(job: JobSpec) -> Schedule:
    return Schedule(job.kind, job.spec, job.timezone)  # type: ignore[arg-type]


# -- how a job is shown (the CLI, the dashboard, the agent's tool) ----------------------------


def local_time(when: float | None, timezone: str) -> str:
    """An epoch as the job's own wall-clock time: ``2026-03-29 09:00 CEST``."""
    if when is None:
        return ""
    moment = datetime.fromtimestamp(when, UTC).astimezone(zone(timezone))
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def describe_job(job: Job) -> dict[str, Any]:
    """A job as the CLI and the agent's tool show it: times in the job's zone."""
    spec = job.spec
    return {
        "name": spec.name,
        "agent": spec.agent_id,
        "ref": f"{spec.agent_id}/{spec.name}",
        "schedule": schedule_of(spec).describe(),
        "timezone": spec.timezone,
        "task": spec.task,
        "deliver_to": str(spec.deliver_to),
        "source": spec.source,
        "state": job.state + (" (running)" if job.running else ""),
        "paused_reason": job.paused_reason,
        "next_run": local_time(job.next_run if job.state == "active" else None, spec.timezone),
        "next_run_at": job.next_run,
        "last_result": job.last_status,
        "last_error": job.last_error,
        "last_run": local_time(job.last_run_at, spec.timezone),
        "failures": job.failures,
        "max_failures": spec.max_failures,
    }


def describe_run(run: JobRun, timezone: str) -> dict[str, Any]:
    return {
        "id": run.id,
        "scheduled_for": local_time(run.scheduled_for, timezone),
        "fired": local_time(run.fired_at, timezone),
        "status": run.status,
        "error": run.error,
        "finished": local_time(run.finished_at, timezone),
        "manual": run.manual,
    }
