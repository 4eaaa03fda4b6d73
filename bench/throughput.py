"""3. Throughput: a burst of messages over 20 chats, each paired with its own warm agent."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .harness import (
    BenchContext,
    RuntimeKind,
    Row,
    at_least,
    benchmark,
    chat_id,
    config,
    fake_model,
    fake_telegram,
    ms,
    orchestrator_process,
    profiled,
    wait_until,
)

TOKEN = re.compile(r"tp\d{6}x")


@dataclass
class Burst:
    messages: int
    tasks: int
    replies: int
    seconds: float  # first push -> last message answered (its reply at the fake Telegram)
    latencies: list[float]  # per message: pushed -> its reply arrived, seconds
    counts: dict[str, int]

    def rate(self, n: int) -> float:
        return n / self.seconds


@benchmark(
    "throughput",
    "Throughput: 20 agents, a burst over 20 chats",
    """The orchestrator runs as its own process (`clawpen run`, JSON logs to a file), 20 agents
    with `warm: true`, each paired with its own chat and warmed up with one message. Then a burst
    is pushed into the fake Telegram as fast as it takes them (round robin over the chats), and
    timed from the first push until the reply carrying the last message reached the fake.
    Every message is committed (SQLite WAL, `synchronous=FULL`) before it is acknowledged.
    Messages that arrive while an agent is busy are batched into its next turn, so tasks
    (agent turns) and replies are fewer than messages. The in-process runtime (agents as threads
    of the orchestrator process, no containers) is the same burst without isolation.""",
)
async def throughput(ctx: BenchContext) -> list[Row]:
    agents = 20
    messages = ctx.size(2000, 500)
    docker = await burst(ctx, "docker", agents, messages)
    inprocess = await burst(ctx, "inprocess", agents, messages)
    panel = "Per-message latency under the burst"
    rows = []
    for name, result, targets in (
        ("Docker", docker, at_least(500)),
        ("in-process runtime", inprocess, ()),
    ):
        total = f"{result.messages} messages"
        rows += [
            Row(f"{name}: messages/s", "msg/s", [result.rate(result.messages)], targets,
                count=total, digits=0),
            Row(f"{name}: tasks (agent turns)/s", "tasks/s", [result.rate(result.tasks)],
                count=f"{result.tasks} tasks", digits=0),
            Row(f"{name}: replies/s", "replies/s", [result.rate(result.replies)],
                count=f"{result.replies} replies", digits=0),
            Row(f"{name}: message pushed -> its reply at the fake", "ms", ms(result.latencies),
                plot=panel, digits=0),
        ]
    ratio = docker.rate(docker.messages) / inprocess.rate(inprocess.messages)
    rows.append(Row("messages/s ratio, Docker / in-process", "×", [ratio]))
    ctx.note(
        f"Docker: {docker.messages} messages in {docker.seconds:.2f} s as {docker.tasks} tasks"
        f" ({docker.messages / max(docker.tasks, 1):.1f} messages per agent turn) and"
        f" {docker.replies} replies; store after the burst: {docker.counts}."
    )
    ctx.note(
        f"In-process runtime: {inprocess.messages} messages in {inprocess.seconds:.2f} s as"
        f" {inprocess.tasks} tasks and {inprocess.replies} replies."
    )
    return rows


async def burst(ctx: BenchContext, runtime: RuntimeKind, agents: int, messages: int) -> Burst:
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        data_dir = ctx.data_dir(f"tp{runtime}")
        raw = config(
            data_dir, model.url, ctx.api_key, telegram, agents, warm=True,
            max_containers=agents + 5,
        )
        async with orchestrator_process(ctx, raw, runtime) as process:
            warm = [telegram.expect(f"echo: warmup-{i}") for i in range(agents)]
            for i in range(agents):
                await telegram.push_text(chat_id(i), f"warmup-{i}")
            async with asyncio.timeout(180):
                await asyncio.gather(*warm)
            before = counts(data_dir / "clawpen.db")
            pushed: dict[str, float] = {}
            answered: dict[str, float] = {}
            replies = 0

            def on_reply(text: str, arrived: float) -> None:
                nonlocal replies
                replies += 1
                for token in TOKEN.findall(text):
                    answered.setdefault(token, arrived)

            telegram.on_reply = on_reply
            async with profiled(ctx, process.pid, f"throughput-{runtime}"):
                first = time.time()
                for j in range(messages):
                    token = f"tp{j:06d}x"
                    pushed[token] = time.time()
                    await telegram.push_text(chat_id(j % agents), token)
                await wait_until(
                    lambda: len(answered) >= messages, 300, "every message to be answered", 0.005
                )
            seconds = max(answered.values()) - first
            await asyncio.sleep(0.2)  # the last replies' delivery records
            after = counts(data_dir / "clawpen.db")
    return Burst(
        messages=messages,
        tasks=after.get("tasks.done", 0) - before.get("tasks.done", 0),
        replies=replies,
        seconds=seconds,
        latencies=[answered[t] - pushed[t] for t in pushed],
        counts=after,
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
