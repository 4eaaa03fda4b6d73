"""2. Cold start: the first message for an agent that has no container, and the floor under it."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from clawpen.runtime.base import AgentSpec
from clawpen.runtime.docker import LABEL_INSTANCE, LABEL_MANAGED, container_spec

from .harness import (
    BenchContext,
    Row,
    agent_id,
    at_most,
    benchmark,
    chat_id,
    config,
    fake_model,
    fake_telegram,
    ms,
    orchestrator,
    roundtrip,
)

SETTLE = 0.1  # seconds between stopping the agent and the next message


@benchmark(
    "cold_start",
    "Cold start (no container yet -> task started inside it)",
    """The agent is stopped (`AgentPool.stop`: its container removed) before every sample; then one
    message: `Dispatcher.accept` entered -> the agent in its new container has the task. The
    floor is the same image doing nothing, through the same Docker SDK: create + start + wait
    of `python3 -c pass` (bare, and with the agent's full hardened `container_spec`).""",
)
async def cold_start(ctx: BenchContext) -> list[Row]:
    count = ctx.size(30, 5)
    agent = agent_id(0)
    texts: list[str] = []
    stops: list[float] = []
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        raw = config(ctx.data_dir("cold"), model.url, ctx.api_key, telegram)
        async with orchestrator(ctx, raw, "docker") as (orch, probes):
            await roundtrip(telegram, chat_id(0), "warmup")  # first use: volume, page cache
            for i in range(count):
                began = time.perf_counter()
                await orch.pool.stop(agent, "bench")
                stops.append(time.perf_counter() - began)
                await asyncio.sleep(SETTLE)
                text = f"cold-{i:03d}"
                await roundtrip(telegram, chat_id(0), text)
                texts.append(text)
            starts = probes.starts[1:]
            cold = ms(probes.inbound(t) for t in texts)
    bare = ms(await asyncio.to_thread(floor_runs, ctx, count, hardened=False))
    hardened = ms(await asyncio.to_thread(floor_runs, ctx, count, hardened=True))
    panel = "Cold start vs. the bare `docker run` floor"
    rows = [
        Row("cold start: accept -> task started in new container", "ms", cold, at_most(500),
            plot=panel, digits=0),
        Row("  of which runtime.start (SDK: inspect, create, start)", "ms", ms(starts), digits=0),
        Row("floor: bare create+start+wait `python3 -c pass`", "ms", bare, plot=panel, digits=0),
        Row("floor: same with the agent's hardened container_spec", "ms", hardened, plot=panel,
            digits=0),
        Row("stopping an agent (AgentPool.stop: container removed)", "ms", ms(stops), digits=0),
    ]
    gap = rows[0].p50 - rows[2].p50
    ctx.note(
        f"A bare container run of this image costs {rows[2].p50:.0f} ms (p50) on this machine"
        f" ({rows[3].p50:.0f} ms with the hardened spec: tmpfs, volume, socket mount, init,"
        f" limits); the orchestrator's cold start is {gap:+.0f} ms from the bare floor, which"
        " covers the agent's Python start-up, its connection to the socket and the two store"
        " commits before the task is handed over."
    )
    return rows


def floor_runs(ctx: BenchContext, count: int, hardened: bool) -> list[float]:
    """Seconds for create + start + wait of ``python3 -c pass`` in the agent image."""
    instance = f"bench{secrets.token_hex(4)}"
    ctx.track(instance)
    labels = {LABEL_MANAGED: "true", LABEL_INSTANCE: instance, "clawpen.agent": "floor"}
    args: dict[str, Any]
    if hardened:
        socket_dir = ctx.data_dir("floor")
        spec = AgentSpec("floor", instance, ctx.image, Path(socket_dir))
        args = container_spec(spec)
        name = args["volumes"]
        ctx.docker.volumes.create(next(iter(name)), labels=labels)
    else:
        args = {"image": ctx.image, "network_mode": "none", "labels": labels}
    args["entrypoint"] = ["python3", "-c", "pass"]
    samples = []
    for i in range(count + 1):  # the first one warms the caches and is not counted
        args["name"] = f"clawpen-{instance}-floor-{i}"
        began = time.perf_counter()
        container = ctx.docker.containers.create(**args)
        container.start()
        status = container.wait()
        elapsed = time.perf_counter() - began
        container.remove(force=True)
        if status.get("StatusCode") != 0:
            raise RuntimeError(f"the floor container exited with {status}")
        if i:
            samples.append(elapsed)
    return samples


