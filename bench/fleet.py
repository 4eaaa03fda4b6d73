"""3. Density: 200 agents on this machine, steady random traffic, most agents paused."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
from docker.models.containers import Container

from clawpen.runtime.docker import LABEL_INSTANCE
from clawpen.runtime.pool import instance_id

from .children import orchestrator_process
from .fakes import chat_id, config, fake_model, fake_telegram
from .harness import BenchContext, Row, at_most, benchmark, ms, wait_until
from .memory import MB
from .procs import tree_memory

PAUSE_AFTER = 2.0  # seconds idle before an agent's container is frozen, for this run
RATE = 4.0  # messages per second, to agents drawn at random
REPLY_TIMEOUT = 120.0  # seconds after the last message for every reply to arrive
SAMPLED = 20  # paused containers whose memory is read (docker stats costs about 1 s each)


@benchmark(
    "fleet",
    "Density: 200 agents, steady random traffic, most of them paused",
    """`clawpen run` as its own process with 200 agents (10 with `--quick`), each paired with
    its own Telegram chat, `pause_after` 2 s, `max_containers` raised above the agent count so
    that it is not what makes this work. Every agent answers one message first (its container
    starts); then messages go to agents drawn at random, 4 a second as a Poisson process, for
    60 s (10 s with `--quick`): an agent gets a message about every 50 s, so nearly all of
    them are frozen (`docker pause`) when their next one comes. Timed per message: pushed into
    the fake Telegram -> the agent had its task (its own `agentReceived`, from the
    orchestrator's log) and -> the reply reached the fake. Lost: messages with no reply
    `REPLY_TIMEOUT` after the last one. Memory: the cgroup `usage` of paused containers
    (`docker stats`, a sample of them), and the orchestrator's RSS (its process tree) with no
    container running and with every agent's container up, per agent.""",
)
async def fleet(ctx: BenchContext) -> list[Row]:
    agents = ctx.size(200, 10)
    duration = ctx.size(60, 10)
    draw = random.Random(22)
    pushed: dict[str, tuple[int, float]] = {}  # text -> (agent number, time.time() pushed)
    arrived: dict[str, float] = {}
    async with fake_model(ctx) as model, fake_telegram() as telegram:

        def reply(text: str, at: float) -> None:
            arrived.setdefault(text.removeprefix("echo: "), at)

        telegram.on_reply = reply
        data_dir = ctx.data_dir("fleet")
        raw = config(
            data_dir,
            model.url,
            ctx.api_key,
            telegram,
            agents,
            max_containers=agents + 20,
            pause_after=PAUSE_AFTER,
        )
        async with orchestrator_process(ctx, ctx.current, raw) as process:
            empty = tree_memory(process.pid)
            began = time.perf_counter()
            for i in range(agents):
                pushed[f"up-{i:03d}"] = (i, time.time())
                await telegram.push_text(chat_id(i), f"up-{i:03d}")
            await wait_until(lambda: len(arrived) == agents, 600, "every agent's first reply")
            start_all = time.perf_counter() - began
            full = tree_memory(process.pid)
            instance = instance_id(data_dir)
            await wait_until(
                lambda: paused_count(ctx.docker, instance) >= agents * 0.9,
                60,
                "most agents frozen",
                every=1.0,
            )
            steady: list[str] = []
            deadline = time.perf_counter() + duration
            n = 0
            while time.perf_counter() < deadline:
                await asyncio.sleep(draw.expovariate(RATE))
                i = draw.randrange(agents)
                text = f"m{n:05d}-{i:03d}"
                n += 1
                pushed[text] = (i, time.time())
                steady.append(text)
                await telegram.push_text(chat_id(i), text)
            with contextlib.suppress(TimeoutError):  # counted as lost below
                await wait_until(
                    lambda: all(t in arrived for t in steady), REPLY_TIMEOUT, "every reply"
                )
            frozen = paused_count(ctx.docker, instance)
            per_paused = await asyncio.to_thread(paused_memory, instance)
            executed = process.events("task_executed")
    started = task_starts(executed)
    to_task = [
        started_after(started, str(chat_id(pushed[t][0])), pushed[t][1]) - pushed[t][1]
        for t in steady
        if t in arrived
    ]
    to_reply = [arrived[t] - pushed[t][1] for t in steady if t in arrived]
    lost = sum(1 for t in steady if t not in arrived)
    task_row = Row(
        "message -> task started (pushed -> the agent had it), steady traffic",
        "ms",
        ms(to_task),
        plot="Density: 200 agents, most paused",
        digits=1,
    )
    growth = (full.rss_mb - empty.rss_mb) / agents
    ctx.note(
        f"{agents} agents, {agents} containers: every agent's first message answered"
        f" {start_all:.0f} s after the first was pushed (all containers starting at once);"
        f" {frozen} containers were frozen at the end of the traffic. max_containers was"
        f" {agents + 20}. Steady traffic: {len(steady)} messages in {duration} s."
    )
    return [
        task_row,
        Row("message -> reply at the fake, steady traffic", "ms", ms(to_reply), digits=1),
        Row(
            f"message -> task started, p99 / p50 ({task_row.p99:.0f} ms / {task_row.p50:.0f} ms)",
            "ratio",
            [task_row.p99 / task_row.p50],
            at_most(10),
        ),
        Row("messages lost (no reply)", "messages", [float(lost)], at_most(0), digits=0),
        Row(
            f"paused agent container, cgroup usage ({len(per_paused)} sampled)",
            "MB",
            per_paused,
            digits=1,
        ),
        Row(
            f"orchestrator processes RSS with {agents} agents up",
            "MB",
            [full.rss_mb],
            note=f"{empty.rss_mb:.1f} MB with none up",
            digits=1,
        ),
        Row("orchestrator processes RSS growth per agent up", "MB", [growth], digits=2),
        Row("containers frozen at the end (of agents)", "containers", [float(frozen)], digits=0),
    ]


def task_starts(executed: list[dict[str, object]]) -> dict[str, list[float]]:
    """Chat -> the agent's own ``agentReceived`` of each task it ran there, in order."""
    starts: dict[str, list[float]] = {}
    for entry in executed:
        received = entry.get("agentReceived")
        if isinstance(received, (int, float)):
            starts.setdefault(str(entry.get("chat")), []).append(float(received))
    for times in starts.values():
        times.sort()
    return starts


def started_after(starts: dict[str, list[float]], chat: str, pushed: float) -> float:
    """The first task started in ``chat`` at or after ``pushed`` (the one that carried it)."""
    times = starts.get(chat, [])
    index = bisect.bisect_left(times, pushed)
    return times[index] if index < len(times) else float("nan")


def paused_count(client: docker.DockerClient, instance: str) -> int:
    label = {"label": [f"{LABEL_INSTANCE}={instance}"], "status": "paused"}
    return len(client.containers.list(filters=label))


def paused_memory(instance: str) -> list[float]:
    """The cgroup usage (MB) of up to ``SAMPLED`` paused containers, read at once."""
    label = {"label": [f"{LABEL_INSTANCE}={instance}"], "status": "paused"}
    client = docker.from_env(max_pool_size=SAMPLED + 4)
    try:
        containers = client.containers.list(filters=label)[:SAMPLED]
        if not containers:
            return []
        with ThreadPoolExecutor(max_workers=len(containers)) as pool:
            return list(pool.map(usage, containers))
    finally:
        client.close()


def usage(container: Container) -> float:
    try:
        stats = container.stats(stream=False, one_shot=True)
    except docker.errors.APIError:  # engines before API 1.41: two samples, ~1 s
        stats = container.stats(stream=False)
    return float(stats["memory_stats"].get("usage", 0)) / MB
