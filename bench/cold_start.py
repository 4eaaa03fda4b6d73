"""2. Cold start: the first message for an agent that has no container, and the floor under it;
and the first message for an agent whose container is frozen (paused), in the same run."""

from __future__ import annotations

import asyncio
import time

from .fakes import agent_id, chat_id, config, fake_model, fake_telegram, roundtrip
from .floors import docker_runs
from .harness import BenchContext, Row, at_most, benchmark, ms, wait_until
from .inprocess import orchestrator

SETTLE = 0.1  # seconds between stopping the agent and the next message
PAUSE_AFTER = 0.3  # the agent's pause_after here: frozen soon after each answer


@benchmark(
    "cold_start",
    "Cold start (no container yet -> task started inside it) and resume (frozen -> task started)",
    """Cold: the agent is stopped (`AgentPool.stop`: its container removed) before the sample;
    then one message: `message_arrived` (`Intake.accept` entered) -> the agent in its new
    container has the task (its own `agentReceived`). Resume: the agent (`pause_after` 0.3 s)
    answered a message and its container was frozen (`docker pause`, waited for in the pool's
    state); then one message, timed the same way: the thaw (`docker unpause`) is on its path.
    The two alternate, sample by sample, so that drift hits both. The floor is the same image
    doing nothing, through the same Docker SDK: create + start + wait of `python3 -c pass`
    (bare, and with the agent's full hardened `container_spec`), measured in the same run.""",
)
async def cold_start(ctx: BenchContext) -> list[Row]:
    count = ctx.size(40, 5)
    agent = agent_id(0)
    ids: list[str] = []
    resumed: list[str] = []
    stops: list[float] = []
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        raw = config(
            ctx.data_dir("cold"), model.url, ctx.api_key, telegram, pause_after=PAUSE_AFTER
        )
        async with orchestrator(ctx, raw, "docker") as (orch, probes):
            await roundtrip(telegram, chat_id(0), "warmup")  # first use: volume, page cache
            for i in range(count):
                await wait_until(lambda: agent in orch.pool.paused, 30, "the agent frozen")
                trip = await roundtrip(telegram, chat_id(0), f"resume-{i:03d}")
                resumed.append(trip.platform_id)
                began = time.perf_counter()
                await orch.pool.stop(agent, "bench")
                stops.append(time.perf_counter() - began)
                await asyncio.sleep(SETTLE)
                trip = await roundtrip(telegram, chat_id(0), f"cold-{i:03d}")
                ids.append(trip.platform_id)
            starts = probes.starts[-count:]
            cold = ms(probes.inbound(i) for i in ids)
            resume = ms(probes.inbound(i) for i in resumed)
    bare_parts = await asyncio.to_thread(docker_runs, ctx, count, hardened=False)
    hardened_parts = await asyncio.to_thread(docker_runs, ctx, count, hardened=True)
    panel = "Cold start vs. the bare `docker run` floor"
    cold_row = Row(
        "cold start: accept -> task started in new container",
        "ms",
        cold,
        at_most(500),
        plot=panel,
        digits=0,
    )
    bare = Row(
        "floor: bare create+start+wait `python3 -c pass`",
        "ms",
        ms(sum(parts) for parts in bare_parts),
        plot=panel,
        digits=0,
    )
    hardened = Row(
        "floor: same with the agent's hardened container_spec",
        "ms",
        ms(sum(parts) for parts in hardened_parts),
        plot=panel,
        digits=0,
    )
    phases = [
        Row(f"  bare floor, of which {name}", "ms", ms(p[i] for p in bare_parts), digits=0)
        for i, name in enumerate(
            ("create", "start (dockerd, containerd, runc)", "wait (python3 runs, exits)")
        )
    ]
    resume_row = Row(
        "resume: accept -> task started in the thawed container",
        "ms",
        resume,
        plot=panel,
        digits=1,
    )
    gap = cold_row.p50 - bare.p50
    ctx.note(
        f"The floor is the container itself: a bare create + start + wait of this image costs"
        f" {bare.p50:.0f} ms (p50) here, {hardened.p50:.0f} ms with the hardened spec (tmpfs,"
        f" workspace volume, socket mount, init, limits); {phases[1].p50:.0f} ms of it is the"
        f" `start` call (dockerd, containerd and runc setting up namespaces, mounts and"
        f" cgroups). The orchestrator's cold start is {abs(gap):.0f} ms"
        f" {'above' if gap >= 0 else 'below'} the bare floor: the same container start, then the"
        " agent's Python start-up and connection to its socket instead of `python3 -c pass`,"
        " plus the store commits before the hand-over."
    )
    return [
        cold_row,
        Row(
            "  of which agent start (`agent_started`: container start until the agent connected)",
            "ms",
            ms(starts),
            digits=0,
        ),
        bare,
        *phases,
        hardened,
        Row("stopping an agent (AgentPool.stop: container removed)", "ms", ms(stops), digits=0),
        Row("cold start p50 / bare docker run floor p50", "ratio", [cold_row.p50 / bare.p50]),
        resume_row,
        Row(
            f"resume p50 / cold start p50 ({resume_row.p50:.1f} ms / {cold_row.p50:.0f} ms)",
            "ratio",
            [resume_row.p50 / cold_row.p50],
            at_most(0.1),
            digits=3,
        ),
    ]
