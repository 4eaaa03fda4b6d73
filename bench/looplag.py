"""The orchestrator's event-loop stalls, read from its own loop-lag probe.

The orchestrator sleeps 10 ms again and again (250 ms while its loop is idle) and records
by how much it overslept
(``clawpen_event_loop_lag_seconds``, a histogram with buckets at 1, 2, 3, 5, 7.5, 10, 25 ms,
...; ``clawpen_event_loop_lag_max_seconds``, the longest since it started). We read them from
its admin socket (``GET /metrics``) before and after a run: the histogram's difference is the
run's own. Its longest stall is at most the upper bound of the highest bucket that gained
samples; when the all-time maximum rose during the run, that maximum is the run's, exactly.

    >>> import math
    >>> before = Lag({0.001: 10, 0.005: 10, math.inf: 10}, 10, 0.002)
    >>> after = Lag({0.001: 15, 0.005: 18, math.inf: 18}, 18, 0.004)
    >>> stall = Stall.between(before, after)
    >>> stall.samples, stall.bound, stall.exact, stall.over(0.005)
    (8, 0.005, 0.004, 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from clawpen.ops.admin import ADMIN_SOCKET

HISTOGRAM = "clawpen_event_loop_lag_seconds"
MAXIMUM = "clawpen_event_loop_lag_max_seconds"
# the part of each stall the orchestrator caused itself: the lag less the time its loop thread
# waited for a CPU that other processes held (the kernel's schedstat)
HELD_HISTOGRAM = "clawpen_event_loop_held_seconds"
HELD_MAXIMUM = "clawpen_event_loop_held_max_seconds"


@dataclass(frozen=True)
class Lag:
    """The probe's histogram at one moment: cumulative counts by upper bound (seconds)."""

    buckets: dict[float, float]
    count: float
    maximum: float

    @classmethod
    def parse(cls, text: str, histogram: str = HISTOGRAM, maximum_name: str = MAXIMUM) -> Lag:
        buckets: dict[float, float] = {}
        count = maximum = math.nan
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{histogram}_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
                elif sample.name == f"{histogram}_count":
                    count = sample.value
                elif sample.name == maximum_name:
                    maximum = sample.value
        if not buckets:
            raise ValueError(f"no {histogram} in the metrics: does this orchestrator have it?")
        return cls(buckets, count, maximum)


@dataclass(frozen=True)
class Stall:
    """What the probe saw between two readings."""

    gained: dict[float, float]  # cumulative samples gained, by upper bound
    samples: int
    bound: float  # the longest stall was at most this (seconds); 0 without samples
    exact: float | None  # the longest stall, when the all-time maximum rose meanwhile

    @classmethod
    def between(cls, before: Lag, after: Lag) -> Stall:
        gained = {le: after.buckets[le] - before.buckets.get(le, 0) for le in after.buckets}
        bounds = sorted(gained)
        bound = 0.0
        previous = 0.0
        for le in bounds:
            if gained[le] > previous:  # this bucket (not only those below it) gained samples
                bound = le
            previous = gained[le]
        exact = after.maximum if after.maximum > before.maximum else None
        return cls(gained, int(after.count - before.count), bound, exact)

    @property
    def longest(self) -> float:
        """The best figure for the longest stall: exact when known, else the bucket's bound."""
        return self.exact if self.exact is not None else self.bound

    def over(self, threshold: float) -> int:
        """Samples longer than ``threshold`` (which must be a bucket bound)."""
        return int(self.samples - self.gained.get(threshold, 0))

    def __add__(self, other: Stall) -> Stall:
        gained = {le: self.gained.get(le, 0) + other.gained.get(le, 0) for le in self.gained}
        exact = max((s.exact for s in (self, other) if s.exact is not None), default=None)
        unknown = max((s.bound for s in (self, other) if s.exact is None), default=0.0)
        if exact is not None and exact < unknown:
            exact = None  # the other run may have stalled longer than this one's exact figure
        bound = max(self.bound, other.bound)
        return Stall(gained, self.samples + other.samples, bound, exact)


@dataclass(frozen=True)
class Readings:
    lag: Lag  # every stall, as the loop's tasks felt it
    held: Lag  # the part of each that the orchestrator caused itself


async def read_lag(data_dir: Path) -> Readings:
    """The loop-lag histograms of the orchestrator running on ``data_dir``, from its admin
    socket."""
    connector = aiohttp.UnixConnector(path=str(data_dir / ADMIN_SOCKET))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://admin/metrics", timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        response.raise_for_status()
        text = await response.text()
    return Readings(Lag.parse(text), Lag.parse(text, HELD_HISTOGRAM, HELD_MAXIMUM))
