"""The time math of scheduled jobs: tables, no clock, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clawpen.schedule import (
    Schedule,
    ScheduleError,
    first_run,
    format_every,
    interval,
    next_after,
    parse,
    parse_every,
    plan,
)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def runs(schedule: Schedule, after: float, count: int) -> list[float]:
    out, at = [], after
    for _ in range(count):
        following = next_after(schedule, at)
        assert following is not None
        out.append(following)
        at = following
    return out


BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"

# (cron, zone, start (UTC), the next three runs (UTC))
DST_TABLE = [
    # Berlin springs forward on 2026-03-29 at 02:00 -> 03:00: 02:30 is skipped -> runs at 03:00
    (
        "30 2 * * *",
        BERLIN,
        utc(2026, 3, 28, 12),
        [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)],
    ),
    # 09:00 stays 09:00 local: 08:00 UTC in winter, 07:00 UTC in summer
    (
        "0 9 * * *",
        BERLIN,
        utc(2026, 3, 28, 0),
        [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)],
    ),
    # Berlin falls back on 2026-10-25 at 03:00 -> 02:00: 02:30 happens twice, runs once
    (
        "30 2 * * *",
        BERLIN,
        utc(2026, 10, 24, 12),
        [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)],
    ),
    # New York springs forward on 2026-03-08 at 02:00 -> 03:00
    (
        "30 2 * * *",
        NEW_YORK,
        utc(2026, 3, 7, 12),
        [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)],
    ),
    # New York falls back on 2026-11-01 at 02:00 -> 01:00: 01:30 happens twice, runs once
    (
        "30 1 * * *",
        NEW_YORK,
        utc(2026, 10, 31, 12),
        [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)],
    ),
    # weekdays at 8 in New York, across the fall-back weekend (Fri 30 Oct -> Mon 2 Nov)
    (
        "0 8 * * 1-5",
        NEW_YORK,
        utc(2026, 10, 30, 0),
        [utc(2026, 10, 30, 12), utc(2026, 11, 2, 13), utc(2026, 11, 3, 13)],
    ),
]


@pytest.mark.parametrize(("cron", "zone", "start", "expected"), DST_TABLE)
def test_cron_runs_at_the_right_instants_across_dst(
    cron: str, zone: str, start: float, expected: list[float]
) -> None:
    assert runs(parse(schedule=cron, timezone=zone), start, 3) == expected


def test_interval_is_elapsed_time_across_dst_and_keeps_its_phase() -> None:
    every_hour = parse(every="1h", timezone=BERLIN)
    start = utc(2026, 3, 29, 0, 15)  # 01:15 CET, the night Berlin loses an hour
    assert runs(every_hour, start, 3) == [start + 3600, start + 7200, start + 10800]
    # found due late, the next run stays on the grid of the first
    assert next_after(every_hour, start + 3 * 3600 + 5, previous=start) == start + 4 * 3600


@pytest.mark.parametrize(
    ("at", "zone", "expected"),
    [
        ("2026-12-01T09:00", BERLIN, utc(2026, 12, 1, 8)),
        ("2026-12-01T09:00", "UTC", utc(2026, 12, 1, 9)),
        ("2026-03-29T02:30", BERLIN, utc(2026, 3, 29, 1, 0)),  # skipped -> next valid minute
        ("2026-10-25T02:30", BERLIN, utc(2026, 10, 25, 0, 30)),  # repeated -> the first
        ("2026-11-01T01:30", NEW_YORK, utc(2026, 11, 1, 5, 30)),
    ],
)
def test_one_shot_runs_once_at_its_local_time(at: str, zone: str, expected: float) -> None:
    schedule = parse(at=at, timezone=zone)
    assert first_run(schedule, utc(2026, 1, 1)) == expected
    assert next_after(schedule, expected) is None


def test_downtime_gives_one_catch_up_run_or_none() -> None:
    daily = parse(schedule="0 9 * * *", timezone=BERLIN)
    due = utc(2026, 6, 1, 7)  # 09:00 CEST
    back = utc(2026, 6, 3, 12)  # two days and a bit later
    once = plan(daily, due, back, "run_once")
    skip = plan(daily, due, back, "skip")
    assert once.run and not skip.run
    # either way the next run is the first one after now: no burst of missed runs
    assert once.next_run == skip.next_run == utc(2026, 6, 4, 7)


def test_a_few_seconds_late_is_on_time_even_with_skip() -> None:
    daily = parse(schedule="0 9 * * *")
    decided = plan(daily, utc(2026, 6, 1, 9), utc(2026, 6, 1, 9, 0, 5), "skip")
    assert decided.run and decided.next_run == utc(2026, 6, 2, 9)


def test_a_following_run_worked_out_ahead_is_used_when_still_ahead() -> None:
    daily = parse(schedule="0 9 * * *")
    due, now = utc(2026, 6, 1, 9), utc(2026, 6, 1, 9, 0, 1)
    assert plan(daily, due, now, following=utc(2026, 6, 2, 9)).next_run == utc(2026, 6, 2, 9)
    # a stale one (after downtime) is not: the next run is after now
    late = utc(2026, 6, 5, 12)
    assert plan(daily, due, late, following=utc(2026, 6, 2, 9)).next_run == utc(2026, 6, 6, 9)


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900), ("1h30m", 5400), ("2d", 172800), ("45s", 45), (90, 90)]
)
def test_intervals_read_and_written(text: str | int, seconds: int) -> None:
    assert parse_every(text) == seconds
    assert parse_every(format_every(seconds)) == seconds


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"schedule": "0 25 * * *"}, "not a cron expression"),
        ({"schedule": "0 9 * *"}, "not a cron expression"),
        ({"every": "soon"}, "not an interval"),
        ({"every": "0m"}, "at least 1s"),
        ({"at": "tomorrow"}, "not a date and time"),
        ({"schedule": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"schedule": "0 9 * * *", "every": "1h"}, "exactly one"),
        ({}, "exactly one"),
    ],
)
def test_bad_schedules_are_refused_with_a_reason(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse(**kwargs)  # type: ignore[arg-type]


def test_shortest_gap_between_runs() -> None:
    assert interval(parse(schedule="*/5 * * * *")) == 300
    assert interval(parse(schedule="0 8 * * 1-5")) == 86400
    assert interval(parse(every="15m")) == 900
    assert interval(parse(at="2026-12-01T09:00")) is None
