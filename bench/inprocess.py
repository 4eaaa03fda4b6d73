"""Orchestrators running in this process, observed through the events their log carries.

``Probes`` subscribes to the log's event fan-out (``clawpen.obs.logging.subscribe``) and takes
``time.time()`` as each event arrives: the fan-out calls it synchronously, on the code path
that logs the event, at any log level. Containers share the host's clock, so the agent's own
times (``agentReceived``, ``agentAnswered`` on ``task_executed``) line up with ours.

Several orchestrators can run side by side in this process: each runs in a context of its own
(``contextvars``), which every task it starts inherits, and its probes keep only the events
logged in that context.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from structlog.typing import EventDict

from clawpen.app import Orchestrator
from clawpen.channels.base import Channel
from clawpen.config import Settings
from clawpen.obs import logging as clawpen_logging
from clawpen.runtime.base import AgentRuntime
from clawpen.runtime.docker import DockerRuntime, connect
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.runtime.pool import instance_id

from .fakes import settings
from .harness import BenchContext

RuntimeKind = Literal["docker", "inprocess"]
ORCHESTRATOR: contextvars.ContextVar[str] = contextvars.ContextVar("bench_orchestrator")


@dataclass
class Probes:
    """When things happened to each message of one orchestrator (``time.time()``, seconds),
    keyed by the message's platform id (what ``FakeTelegram.push_text`` returned):

    arrived:  platform id -> ``message_arrived`` (``Intake.accept`` entered)
    task_of:  platform id -> the task that carried it (``task_handed``)
    handed:   task id -> ``task_handed`` (just before the task is offered to the agent)
    agent:    task id -> (``agentReceived``, ``agentAnswered``): the agent's own clock
    sending:  task id -> ``reply_sending`` of its first chunk (just before the channel's send)
    starts:   ``agent_started`` durations: container start until the agent connected
    """

    name: str
    arrived: dict[str, float] = field(default_factory=dict)
    task_of: dict[str, int] = field(default_factory=dict)
    handed: dict[int, float] = field(default_factory=dict)
    agent: dict[int, tuple[float, float]] = field(default_factory=dict)
    sending: dict[int, float] = field(default_factory=dict)
    starts: list[float] = field(default_factory=list)

    def __call__(self, event: EventDict) -> None:
        if ORCHESTRATOR.get(None) != self.name:
            return
        now = time.time()
        kind = event.get("event")
        if kind == "message_arrived":
            self.arrived.setdefault(str(event["platformId"]), now)
        elif kind == "task_handed":
            task = int(event["taskId"])
            self.handed.setdefault(task, now)
            for platform_id in event.get("platformIds", ()):
                self.task_of.setdefault(str(platform_id), task)
        elif kind == "task_executed" and "agentReceived" in event:
            self.agent[int(event["taskId"])] = (
                float(event["agentReceived"]),
                float(event["agentAnswered"]),
            )
        elif kind == "reply_sending" and event.get("chunk") == 0:
            self.sending.setdefault(int(event["taskId"]), now)
        elif kind == "agent_started":
            self.starts.append(float(event["duration"]))

    def inbound(self, platform_id: str) -> float:
        """Seconds from the orchestrator receiving the message to the agent having its task."""
        return self.agent[self.task_of[platform_id]][0] - self.arrived[platform_id]

    def inside(self, platform_id: str) -> float:
        """Seconds the agent worked on the task that carried the message (its own clock)."""
        received, answered = self.agent[self.task_of[platform_id]]
        return answered - received

    def outbound(self, platform_id: str) -> float:
        """Seconds from the agent's final answer to the platform send call."""
        task = self.task_of[platform_id]
        return self.sending[task] - self.agent[task][1]


def make_runtime(kind: RuntimeKind, settings: Settings) -> AgentRuntime:
    if kind == "docker":
        runtime = DockerRuntime(connect(settings.docker_host), instance_id(settings.data_dir))
        runtime.check_image(settings.image)
        return runtime
    return InProcessRuntime(settings.data_dir / "workspaces")


@contextlib.asynccontextmanager
async def orchestrator(
    ctx: BenchContext,
    raw: dict[str, Any],
    runtime: RuntimeKind = "docker",
    channels: Mapping[str, Channel] | None = None,
) -> AsyncIterator[tuple[Orchestrator, Probes]]:
    """An orchestrator of this tree running in this process (in the background), and the
    probes that listen to its events. Platform adapters run in processes of their own, as in
    production; ``channels`` replaces the adapters of those names with the bench's own."""
    cfg = settings(raw)
    ctx.track(instance_id(cfg.data_dir))
    orch = Orchestrator.open(cfg, runtime=make_runtime(runtime, cfg), channels=channels)
    probes = Probes(str(cfg.data_dir))
    unsubscribe = clawpen_logging.subscribe(probes)
    context = contextvars.copy_context()
    context.run(ORCHESTRATOR.set, probes.name)
    task = asyncio.create_task(orch.run(), name=f"orchestrator-{runtime}", context=context)
    try:
        ready = asyncio.create_task(orch.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()  # raises what the orchestrator died of
            raise TimeoutError("the orchestrator did not become ready within 60 s")
        yield orch, probes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        unsubscribe()
