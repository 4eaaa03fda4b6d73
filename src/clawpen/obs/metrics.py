"""Prometheus metrics, in a registry per orchestrator so tests can run several side by side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
LAG_INTERVAL = 0.01  # seconds between two looks at the event loop
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

    async def watch_event_loop(self, interval: float = LAG_INTERVAL) -> None:
        """Sleep ``interval`` again and again; whatever it oversleeps, every other task waited
        as long. Either something here held the loop (a blocking call, a long computation, a
        garbage collection, another of our threads holding the GIL), or the machine's CPUs were
        busy with other processes: the kernel's count of the time the loop thread waited to
        run tells the two apart (``held`` is the lag without that wait)."""
        worst_lag = worst_held = 0.0
        while True:
            began, queued = time.perf_counter(), _run_queue_wait()
            await asyncio.sleep(interval)
            lag = max(0.0, time.perf_counter() - began - interval)
            held = max(0.0, lag - (_run_queue_wait() - queued))
            self.loop_lag.observe(lag)
            self.loop_held.observe(held)
            if lag > worst_lag:
                worst_lag = lag
                self.loop_lag_max.set(lag)
            if held > worst_held:
                worst_held = held
                self.loop_held_max.set(held)


def _run_queue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat; 0.0
    where the kernel does not say, and then every stall counts as held)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
