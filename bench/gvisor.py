"""7. gVisor's price: cold start, a warm turn and memory of an agent under runsc next to runc."""

from __future__ import annotations

import asyncio

import docker
import docker.errors

from clawpen.runtime.docker import LABEL_AGENT, LABEL_INSTANCE
from clawpen.runtime.pool import instance_id

from .fakes import agent_id, chat_id, config, fake_model, fake_telegram, roundtrip
from .harness import BenchContext, Row, at_most, benchmark, ms
from .inprocess import orchestrator
from .memory import MB

SETTLE = 0.1  # seconds between stopping an agent and its next message
RUNTIMES = ("runc", "runsc")


@benchmark(
    "gvisor",
    "gVisor's price: runsc next to runc (cold start, warm turn, memory)",
    """One orchestrator of this tree in the bench process with two agents, identical but for
    `runtime:` (`runc`, the default, and `runsc`, gVisor's user-space kernel), each paired
    with its own chat. Cold start: the agent is stopped (its container removed), then one
    message: `message_arrived` -> the agent in its new container has the task (its own
    `agentReceived`); the two runtimes alternate sample by sample (the order swaps every
    round). Warm: one message at a time to the running agent, alternating, pushed into the
    fake Telegram -> the reply reached it. Memory: each idle agent's container, the cgroup's
    `usage` from `docker stats` (under runsc the cgroup holds the sandbox: the Sentry, the
    gofer and the agent's memory as the Sentry sees it).""",
)
async def gvisor(ctx: BenchContext) -> list[Row]:
    runtimes = ctx.docker.info().get("Runtimes", {})
    if "runsc" not in runtimes:
        ctx.note(
            "Not measured: this Docker engine has no runsc runtime (gVisor); install it and"
            " register it in /etc/docker/daemon.json (`runsc install`)."
        )
        return []
    count = ctx.size(30, 4)
    warm_count = ctx.size(200, 20)
    cold: dict[str, list[str]] = {r: [] for r in RUNTIMES}
    warm: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    usage: dict[str, float] = {}
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        data_dir = ctx.data_dir("gvisor")
        raw = config(data_dir, model.url, ctx.api_key, telegram, len(RUNTIMES), pause_after=0)
        for agent, runtime in zip(raw["agents"], RUNTIMES, strict=True):
            agent["runtime"] = runtime
        async with orchestrator(ctx, raw, "docker") as (orch, probes):
            for i, _ in enumerate(RUNTIMES):  # first use: volume, page cache
                await roundtrip(telegram, chat_id(i), "warmup")
            for n in range(count):
                order = list(enumerate(RUNTIMES))
                for i, runtime in order if n % 2 == 0 else order[::-1]:
                    await orch.pool.stop(agent_id(i), "bench")
                    await asyncio.sleep(SETTLE)
                    trip = await roundtrip(telegram, chat_id(i), f"cold-{runtime}-{n:03d}")
                    cold[runtime].append(trip.platform_id)
            for n in range(warm_count):
                order = list(enumerate(RUNTIMES))
                for i, runtime in order if n % 2 == 0 else order[::-1]:
                    trip = await roundtrip(telegram, chat_id(i), f"warm-{runtime}-{n:04d}")
                    warm[runtime].append(trip.seconds)
            await asyncio.sleep(2.0)  # idle, then memory
            usage = await asyncio.to_thread(container_usage, ctx.docker, instance_id(data_dir))
            cold_ms = {r: ms(probes.inbound(p) for p in ids) for r, ids in cold.items()}
    rows: list[Row] = []
    panel = "Cold start, runc vs runsc (gVisor)"
    for runtime in RUNTIMES:
        rows += [
            Row(
                f"{runtime}: cold start, accept -> task started",
                "ms",
                cold_ms[runtime],
                plot=panel,
                digits=0,
            ),
            Row(f"{runtime}: warm turn, push -> reply", "ms", ms(warm[runtime]), digits=1),
            Row(
                f"{runtime}: idle agent container, cgroup usage",
                "MB",
                [usage.get(agent_id(RUNTIMES.index(runtime)), 0.0)],
                digits=1,
            ),
        ]
    cold_p50 = {r: rows[3 * i].p50 for i, r in enumerate(RUNTIMES)}
    warm_p50 = {r: rows[3 * i + 1].p50 for i, r in enumerate(RUNTIMES)}
    runc_mem, runsc_mem = (rows[3 * i + 2].p50 for i, _ in enumerate(RUNTIMES))
    rows += [
        Row(
            f"cold start p50, runsc / runc ({cold_p50['runsc']:.0f} ms /"
            f" {cold_p50['runc']:.0f} ms)",
            "ratio",
            [cold_p50["runsc"] / cold_p50["runc"]],
            at_most(2),
        ),
        Row("warm turn p50, runsc / runc", "ratio", [warm_p50["runsc"] / warm_p50["runc"]]),
        Row(
            "idle container memory, runsc / runc",
            "ratio",
            [runsc_mem / runc_mem if runc_mem else float("nan")],
        ),
    ]
    ctx.note(
        "Both agents run the same image with the same hardened spec; only the OCI runtime"
        " differs. Under runsc the agent's system calls are served by gVisor's Sentry in user"
        " space: the container's start sets up the sandbox (Sentry and gofer processes) too."
    )
    return rows


def container_usage(client: docker.DockerClient, instance: str) -> dict[str, float]:
    """Agent id -> the cgroup's memory usage of its running container, MB."""
    label = {"label": [f"{LABEL_INSTANCE}={instance}"], "status": "running"}
    usage = {}
    for container in client.containers.list(filters=label):
        try:
            stats = container.stats(stream=False, one_shot=True)
        except docker.errors.APIError:  # engines before API 1.41: two samples, ~1 s
            stats = container.stats(stream=False)
        usage[container.labels[LABEL_AGENT]] = stats["memory_stats"].get("usage", 0) / MB
    return usage
