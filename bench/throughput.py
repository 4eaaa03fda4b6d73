"""3. Throughput: a burst of messages over 20 chats, each paired with its own warm agent."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clawpen.agents import instance_id

from .harness import (
    BenchContext,
    BenchTelegram,
    CpuSnapshot,
    Row,
    RuntimeKind,
    at_least,
    benchmark,
    chat_id,
    config,
    container_pids,
    cpu_snapshot,
    fake_model,
    fake_telegram,
    ms,
    orchestrator_process,
    profiled,
    roundtrip,
    wait_until,
)

AGENTS = 20
TOKEN = re.compile(r"tp\d{6}x")
CLOSED_LOOP = 40  # messages per chat in the closed-loop run (a quarter with --quick)


@dataclass
class Run:
    """One way of loading the orchestrator, and what it gave."""

    messages: int
    seconds: float
    latencies: list[float]  # per message: pushed -> its reply reached the fake, seconds
    cpu: CpuSnapshot  # used during the run
    tasks: int = 0
    replies: int = 0

    def per_second(self, n: int) -> float:
        return n / self.seconds

    def cpu_ms_per_message(self, seconds: float) -> float:
        return 1000 * seconds / self.messages


@dataclass
class Result:
    burst: Run
    closed: Run
    counts: dict[str, int]


@benchmark(
    "throughput",
    "Throughput: 20 agents, a burst over 20 chats",
    """The orchestrator runs as its own process (`clawpen run`, JSON logs to a file), 20 agents
    with `warm: true`, each paired with its own chat and warmed up with one message. Burst: the
    messages are pushed into the fake Telegram at once (round robin over the chats), timed from
    the first push until the reply carrying the last one reached the fake. Every message is
    committed (SQLite WAL, `synchronous=FULL`) before it is acknowledged. Messages that arrive
    while an agent is busy are batched into its next turn, so tasks (agent turns) and replies
    are fewer than messages. Closed loop, after it: every chat sends its next message only when
    the previous one was answered (20 in flight, one message per agent turn, no batching).
    In-process runtime: the same with the agents as threads of the orchestrator process.
    CPU per message: CPU time used during the run by the orchestrator process, by the agent
    containers' processes and by the bench process (the fakes and the driver), over the
    messages.""",
)
async def throughput(ctx: BenchContext) -> list[Row]:
    messages = ctx.size(2000, 500)
    closed = ctx.size(CLOSED_LOOP, CLOSED_LOOP // 4)
    docker = await measure(ctx, "docker", messages, closed)
    inprocess = await measure(ctx, "inprocess", messages, closed)
    rows: list[Row] = []
    for name, result, target in (
        ("Docker", docker, at_least(500)),
        ("in-process runtime", inprocess, ()),
    ):
        burst, loop = result.burst, result.closed
        rows += [
            Row(
                f"{name}, burst: messages/s",
                "msg/s",
                [burst.per_second(burst.messages)],
                target,
                count=f"{burst.messages} messages",
                digits=0,
            ),
            Row(
                f"{name}, burst: tasks (agent turns)/s",
                "tasks/s",
                [burst.per_second(burst.tasks)],
                count=f"{burst.tasks} tasks",
                digits=0,
            ),
            Row(
                f"{name}, burst: replies/s",
                "replies/s",
                [burst.per_second(burst.replies)],
                count=f"{burst.replies} replies",
                digits=0,
            ),
            Row(
                f"{name}, burst: message pushed -> its reply",
                "ms",
                ms(burst.latencies),
                plot="Per-message latency in the burst",
                digits=0,
            ),
            Row(
                f"{name}, closed loop: messages/s",
                "msg/s",
                [loop.per_second(loop.messages)],
                count=f"{loop.messages} messages",
                digits=0,
            ),
            Row(
                f"{name}, closed loop: push -> reply",
                "ms",
                ms(loop.latencies),
                plot="Closed loop: 20 chats, one message in flight each",
                digits=1,
            ),
        ]
    rows.append(
        Row(
            "burst messages/s, Docker / in-process",
            "ratio",
            [docker.burst.per_second(messages) / inprocess.burst.per_second(messages)],
        )
    )
    rows.append(
        Row(
            "closed-loop messages/s, Docker / in-process",
            "ratio",
            [
                docker.closed.per_second(docker.closed.messages)
                / inprocess.closed.per_second(inprocess.closed.messages)
            ],
        )
    )
    for phase, run in (("burst", docker.burst), ("closed loop", docker.closed)):
        cpu = run.cpu
        rows += [
            Row(
                f"Docker, {phase}: CPU per message, orchestrator",
                "ms",
                [run.cpu_ms_per_message(cpu.orchestrator)],
                digits=2,
            ),
            Row(
                f"Docker, {phase}: CPU per message, agent containers",
                "ms",
                [run.cpu_ms_per_message(cpu.agents)],
                digits=2,
            ),
            Row(
                f"Docker, {phase}: CPU per message, fakes + driver",
                "ms",
                [run.cpu_ms_per_message(cpu.bench)],
                digits=2,
            ),
            Row(
                f"Docker, {phase}: machine CPU busy (all cores)",
                "%",
                [100 * cpu.machine_share],
                digits=0,
            ),
        ]
    loop, burst = docker.closed, docker.burst
    ctx.note(
        f"Without batching (the closed loop) the orchestrator process spends"
        f" {loop.cpu_ms_per_message(loop.cpu.orchestrator):.1f} ms of CPU per message and runs"
        f" at {loop.cpu.orchestrator / loop.seconds:.0%} of one core: its single event loop is"
        f" what limits that figure ({loop.per_second(loop.messages):.0f} msg/s) on this machine."
        f" Batching in the burst brings it to"
        f" {burst.cpu_ms_per_message(burst.cpu.orchestrator):.2f} ms per message."
    )
    for name, result in (("Docker", docker), ("In-process runtime", inprocess)):
        burst, loop = result.burst, result.closed
        ctx.note(
            f"{name}: the burst of {burst.messages} messages took {burst.seconds:.2f} s as"
            f" {burst.tasks} agent turns ({burst.messages / max(burst.tasks, 1):.1f} messages"
            f" per turn) and {burst.replies} replies; the orchestrator process used"
            f" {burst.cpu.orchestrator / burst.seconds:.0%} of a core during it and"
            f" {loop.cpu.orchestrator / loop.seconds:.0%} in the closed loop."
            f" Store at the end: {result.counts}."
        )
    return rows


async def measure(ctx: BenchContext, runtime: RuntimeKind, messages: int, closed: int) -> Result:
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        data_dir = ctx.data_dir(f"tp{runtime}")
        raw = config(
            data_dir,
            model.url,
            ctx.api_key,
            telegram,
            AGENTS,
            warm=True,
            max_containers=AGENTS + 5,
        )
        async with orchestrator_process(ctx, raw, runtime) as process:
            warm = [telegram.expect(f"echo: warmup-{i}") for i in range(AGENTS)]
            for i in range(AGENTS):
                await telegram.push_text(chat_id(i), f"warmup-{i}")
            async with asyncio.timeout(180):
                await asyncio.gather(*warm)
            agent_pids: list[int] = []
            if runtime == "docker":
                instance = instance_id(data_dir)
                agent_pids = await asyncio.to_thread(container_pids, ctx.docker, instance)

            def snapshot() -> CpuSnapshot:
                return cpu_snapshot(process.pid, agent_pids)

            db = data_dir / "clawpen.db"
            before = counts(db)
            async with profiled(ctx, process.pid, f"burst-{runtime}"):
                burst = await run_burst(telegram, messages, snapshot)
            await asyncio.sleep(0.2)  # the last replies' delivery records
            after = counts(db)
            burst.tasks = after.get("tasks.done", 0) - before.get("tasks.done", 0)
            async with profiled(ctx, process.pid, f"closed-loop-{runtime}"):
                loop = await run_closed_loop(telegram, closed, snapshot)
            await asyncio.sleep(0.2)
            final = counts(db)
    return Result(burst, loop, final)


async def run_burst(
    telegram: BenchTelegram, messages: int, snapshot: Callable[[], CpuSnapshot]
) -> Run:
    """Push ``messages`` at once over the chats; done when every one was in some reply."""
    pushed: dict[str, float] = {}
    answered: dict[str, float] = {}
    replies = 0

    def on_reply(text: str, arrived: float) -> None:
        nonlocal replies
        replies += 1
        for token in TOKEN.findall(text):
            answered.setdefault(token, arrived)

    telegram.on_reply = on_reply
    try:
        start = snapshot()
        first = time.time()
        for j in range(messages):
            token = f"tp{j:06d}x"
            pushed[token] = time.time()
            await telegram.push_text(chat_id(j % AGENTS), token)
        await wait_until(lambda: len(answered) >= messages, 300, "every message answered", 0.002)
        used = snapshot() - start
    finally:
        telegram.on_reply = None
    return Run(
        messages=messages,
        seconds=max(answered.values()) - first,
        latencies=[answered[t] - pushed[t] for t in pushed],
        cpu=used,
        replies=replies,
    )


async def run_closed_loop(
    telegram: BenchTelegram, per_chat: int, snapshot: Callable[[], CpuSnapshot]
) -> Run:
    """Every chat sends its next message when the previous one was answered."""
    latencies: list[float] = []

    async def user(i: int) -> None:
        for k in range(per_chat):
            pushed, arrived = await roundtrip(telegram, chat_id(i), f"closed-{i}-{k}")
            latencies.append(arrived - pushed)

    start = snapshot()
    began = time.time()
    await asyncio.gather(*(user(i) for i in range(AGENTS)))
    seconds = time.time() - began
    used = snapshot() - start
    return Run(
        messages=len(latencies),
        seconds=seconds,
        latencies=latencies,
        cpu=used,
        tasks=len(latencies),
        replies=len(latencies),
    )


def counts(db: Path) -> dict[str, int]:
    """Rows by table and status, read from the orchestrator's store (it runs in another
    process: SQLite WAL lets us read while it writes)."""
    out: dict[str, int] = {}
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        for table in ("messages", "tasks", "replies"):
            query = f"SELECT status, COUNT(*) FROM {table} GROUP BY status"
            for status, n in connection.execute(query):
                out[f"{table}.{status}"] = n
    finally:
        connection.close()
    return out
