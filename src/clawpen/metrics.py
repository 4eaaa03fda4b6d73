"""Prometheus metrics, in a registry per orchestrator so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.running_agents = Gauge(
            "clawpen_running_agents", "Agent containers running", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
