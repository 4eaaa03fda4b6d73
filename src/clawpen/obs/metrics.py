"""Prometheus metrics, in a registry per orchestrator so tests can run several side by side."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
LAG_INTERVAL = 0.01  # seconds between two looks at the event loop while it is busy
LAG_IDLE_INTERVAL = 0.25  # ... and while it is idle (an idle orchestrator should cost nothing)
BUSY_CPU = 0.001  # seconds of the loop thread's CPU during one look that mean it had work
BUSY_HOLD = 2.0  # seconds the probe keeps looking often after it last saw work
START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "clawpen_messages_total",
            "Inbound messages by outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.tasks = Counter(
            "clawpen_tasks_total", "Agent tasks by outcome", ["agent", "outcome"], registry=r
        )
        self.task_seconds = Histogram(
            "clawpen_task_seconds", "Task duration", ["agent"], registry=r
        )
        self.replies = Counter(
            "clawpen_replies_total",
            "Reply deliveries by outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.tokens = Counter(
            "clawpen_model_tokens_total",
            "Model tokens through the proxy",
            ["agent", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "clawpen_model_cost_usd_total",
            "US dollars charged for model calls (at the configured prices)",
            ["agent"],
            registry=r,
        )
        self.agent_starts = Counter(
            "clawpen_agent_starts_total", "Agent containers started", ["agent"], registry=r
        )
        self.agent_crashes = Counter(
            "clawpen_agent_crashes_total",
            "Agent containers that died on their own",
            ["agent"],
            registry=r,
        )
        self.agent_restarts = Counter(
            "clawpen_agent_restarts_total",
            "Agent containers started again after a crash",
            ["agent"],
            registry=r,
        )
        self.cold_start = Histogram(
            "clawpen_agent_cold_start_seconds",
            "From asking for a container to the agent connected",
            ["agent"],
            buckets=START_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "clawpen_outbox_depth", "Replies waiting to be delivered", ["channel"], registry=r
        )
        self.job_lateness = Histogram(
            "clawpen_job_lateness_seconds",
            "How long after its due time a scheduled job's run was queued",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.running_agents = Gauge(
            "clawpen_running_agents", "Agent containers running", registry=r
        )
        self.channel_up = Gauge(
            "clawpen_channel_up", "1 while a channel's adapter runs", ["channel"], registry=r
        )
        self.loop_lag = Histogram(
            "clawpen_event_loop_lag_seconds",
            "How late the event loop woke a timer: how long something held it",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "clawpen_event_loop_lag_max_seconds", "The longest event loop stall seen", registry=r
        )
        self.loop_held = Histogram(
            "clawpen_event_loop_held_seconds",
            "The part of each stall this process caused: the lag less the time its loop thread"
            " waited for a CPU that other processes held",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.loop_held_max = Gauge(
            "clawpen_event_loop_held_max_seconds",
            "The longest stall this process caused itself",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def set_outbox_depth(self, depth: dict[str, int], channels: Iterable[str]) -> None:
        """Read at each scrape from the store: every channel gets a value, 0 included."""
        for channel in {*channels, *depth}:
            self.outbox_depth.labels(channel).set(depth.get(channel, 0))

    async def watch_event_loop(
        self, interval: float = LAG_INTERVAL, idle_interval: float = LAG_IDLE_INTERVAL
    ) -> None:
        """Sleep ``interval`` again and again; whatever it oversleeps, every other task waited
        as long. Either something here held the loop (a blocking call, a long computation, a
        garbage collection, another of our threads holding the GIL), or the machine's CPUs were
        busy with other processes: the kernel's count of the time the loop thread waited to
        run tells the two apart (``held`` is the lag without that wait).

        Looking 100 times a second is what costs an idle orchestrator most of its CPU, so the
        probe looks every ``idle_interval`` while the loop has nothing else to do (its thread
        spent under ``BUSY_CPU`` on a CPU during the last sleep, and woke on time) and goes back
        to ``interval`` for ``BUSY_HOLD`` seconds as soon as it sees work or a late wake-up.
        A stall longer than ``idle_interval`` is seen in either mode; one that ends an idle
        spell is seen in part (from the moment the probe was due)."""
        worst_lag = worst_held = 0.0
        schedstat = _SchedStat()
        fine_until = 0.0
        queued = schedstat.run_queue_wait()
        try:
            while True:
                began = time.perf_counter()
                sleep = interval if began < fine_until else idle_interval
                slept_cpu = time.thread_time()
                await asyncio.sleep(sleep)
                woke = time.perf_counter()
                others = time.thread_time() - slept_cpu  # the loop's work while we slept
                waited = schedstat.run_queue_wait()
                lag = max(0.0, woke - began - sleep)
                held = max(0.0, lag - (waited - queued))
                queued = waited
                self.loop_lag.observe(lag)
                self.loop_held.observe(held)
                if lag > worst_lag:
                    worst_lag = lag
                    self.loop_lag_max.set(lag)
                if held > worst_held:
                    worst_held = held
                    self.loop_held_max.set(held)
                if held > LAG_BUCKETS[0] or others > BUSY_CPU:
                    fine_until = woke + BUSY_HOLD
        finally:
            schedstat.close()


class _SchedStat:
    """The calling thread's /proc/thread-self/schedstat, opened once (it names the thread
    that opened it) and read again at offset 0 on each look: no open per look."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def run_queue_wait(self) -> float:
        """Seconds the thread has spent runnable but waiting for a CPU (0.0 where the kernel
        does not say, and then every stall counts as held)."""
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
