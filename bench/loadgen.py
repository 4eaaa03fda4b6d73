"""Loading orchestrators in child processes: a burst and a closed loop over 20 chats, each
paired with its own warm agent, several orchestrators in turns (``throughput.py`` reports it).

Burst: the messages are pushed into the fake Telegram at once (round robin over the chats),
timed from the first push until the reply carrying the last one reached the fake. Closed loop:
every chat sends its next message only when the previous one was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id

from .children import OrchestratorProcess, orchestrator_process
from .fakes import BenchTelegram, agent_id, chat_id, config, fake_telegram, roundtrip
from .harness import BenchContext, wait_until
from .inprocess import RuntimeKind
from .looplag import Stall
from .procs import CpuSnapshot, TreeMemory, container_pids, cpu_snapshot, profiled, tree_memory
from .trees import Tree

AGENTS = 20
TOKEN = re.compile(r"tp\d+x")
SETTLE = 0.2  # seconds after a run: the last replies' delivery records


@dataclass
class Run:
    """One way of loading the orchestrator, once, and what it gave."""

    messages: int
    seconds: float
    latencies: list[float]  # per message: pushed -> its reply reached the fake, seconds
    cpu: CpuSnapshot  # used during the run
    tasks: int = 0
    replies: int = 0
    stall: Stall | None = None  # this tree's loop-lag probe during the run
    held: Stall | None = None  # the part of those stalls the orchestrator caused itself

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass
class Contestant:
    """One orchestrator under load: a tree with a runtime, its fake Telegram, its results."""

    key: str  # "before", "after", "inprocess"
    label: str
    tree: Tree
    runtime: RuntimeKind
    process: OrchestratorProcess
    telegram: BenchTelegram
    agent_pids: list[int]
    bursts: list[Run] = field(default_factory=list)
    loops: list[Run] = field(default_factory=list)
    memory: TreeMemory | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> CpuSnapshot:
        return cpu_snapshot(self.process.pid, self.agent_pids)

    @property
    def db(self) -> Path:
        return self.process.data_dir / "clawpen.db"


@dataclass
class Sizes:
    rounds: int
    burst: int  # messages per burst
    per_chat: int  # messages per chat in a closed loop


async def load_all(ctx: BenchContext, model: FakeModel, sizes: Sizes) -> list[Contestant]:
    """Start the four orchestrators, then load them in turns: every round each gets a burst
    and a closed loop, in an order that rotates, so that drift on the machine hits all."""
    baseline, main = await ctx.baseline(), await ctx.main()
    entrants: list[tuple[str, str, Tree, RuntimeKind]] = [
        ("before", baseline.label, baseline, "docker"),
        ("main", main.label, main, "docker"),
        ("after", ctx.current.label, ctx.current, "docker"),
        ("inprocess", "after, in-process agents", ctx.current, "inprocess"),
    ]
    async with contextlib.AsyncExitStack() as stack:
        contestants = [
            await start(ctx, stack, model, key, label, tree, runtime)
            for key, label, tree, runtime in entrants
        ]
        for r in range(sizes.rounds):
            turn = r % len(contestants)
            for contestant in contestants[turn:] + contestants[:turn]:
                await load(ctx, contestant, r, sizes)
        for contestant in contestants:
            contestant.memory = tree_memory(contestant.process.pid)
            contestant.counts = counts(contestant.db)
    return contestants


async def start(
    ctx: BenchContext,
    stack: contextlib.AsyncExitStack,
    model: FakeModel,
    key: str,
    label: str,
    tree: Tree,
    runtime: RuntimeKind,
) -> Contestant:
    telegram = await stack.enter_async_context(fake_telegram())
    data_dir = ctx.data_dir(f"tp{key}")
    raw = config(
        data_dir,
        model.url,
        ctx.api_key,
        telegram,
        AGENTS,
        warm=True,
        max_containers=AGENTS + 5,
    )
    process = await stack.enter_async_context(orchestrator_process(ctx, tree, raw, runtime))
    warmups = [
        asyncio.ensure_future(roundtrip(telegram, chat_id(i), f"warmup-{i}", 180))
        for i in range(AGENTS)
    ]
    _, pending = await asyncio.wait(warmups, timeout=180)
    if pending:
        for waiting in pending:
            waiting.cancel()
        silent = sorted(i for i, w in enumerate(warmups) if w in pending)
        failed = [e for e in process.events("task_executed") if not e.get("success")]
        if runtime == "docker":
            for i in silent:
                print(f"-- {label}: agent {agent_id(i)}'s container log:")
                print(await asyncio.to_thread(agent_log, ctx, data_dir, agent_id(i)))
        port = model.url.rsplit(":", 1)[1]
        ss = await asyncio.create_subprocess_exec("ss", "-tanp", stdout=asyncio.subprocess.PIPE)
        sockets = (await ss.communicate())[0].decode()
        print(f"-- model calls seen by the fake: {len(model.requests)}; its sockets:")
        print("\n".join(line for line in sockets.splitlines() if f":{port}" in line))
        raise RuntimeError(
            f"{label}: no answer to the warm-up of agents {silent} within 180 s; what the"
            f" chats got: {[telegram.texts_to(chat_id(i))[-1:] for i in silent]}; failed"
            f" tasks: {failed[-3:]}; see {process.log}"
        )
    agent_pids: list[int] = []
    if runtime == "docker":
        agent_pids = await asyncio.to_thread(container_pids, ctx.docker, instance_id(data_dir))
    return Contestant(key, label, tree, runtime, process, telegram, agent_pids)


def agent_log(ctx: BenchContext, data_dir: Path, agent: str) -> str:
    """What an agent's container printed (its stderr: the agent logs there), and where its
    Python is (py-spy)."""
    name = f"clawpen-{instance_id(data_dir)}-{agent}"
    out = []
    for c in ctx.docker.containers.list(all=True, filters={"name": name}):
        out.append(f"{c.name} {c.status}: {c.logs(tail=50).decode(errors='replace')!r}")
        if c.status != "running":
            continue
        for process in c.top()["Processes"]:
            if process[-1].startswith("python3"):
                spy = str(Path(sys.executable).with_name("py-spy"))
                dump = subprocess.run(
                    [spy, "dump", "--pid", process[1]], capture_output=True, text=True
                )
                out.append(dump.stdout + dump.stderr)
    return "\n".join(out) or f"(no container named {name})"


async def load(ctx: BenchContext, contestant: Contestant, r: int, sizes: Sizes) -> None:
    """One round for one contestant: a burst, then a closed loop."""
    pid, name = contestant.process.pid, f"{contestant.key}-r{r + 1}"
    lag = await contestant.process.lag()
    before = counts(contestant.db)
    async with profiled(ctx, pid, f"burst-{name}"):
        burst = await run_burst(contestant.telegram, r, sizes.burst, contestant.snapshot)
    await asyncio.sleep(SETTLE)
    burst.tasks = counts(contestant.db).get("tasks.done", 0) - before.get("tasks.done", 0)
    middle = await contestant.process.lag()
    async with profiled(ctx, pid, f"closed-loop-{name}"):
        loop = await run_closed_loop(contestant.telegram, r, sizes.per_chat, contestant.snapshot)
    await asyncio.sleep(SETTLE)
    after = await contestant.process.lag()
    if lag is not None and middle is not None and after is not None:
        burst.stall = Stall.between(lag.lag, middle.lag)
        loop.stall = Stall.between(middle.lag, after.lag)
        burst.held = Stall.between(lag.held, middle.held)
        loop.held = Stall.between(middle.held, after.held)
    contestant.bursts.append(burst)
    contestant.loops.append(loop)


async def run_burst(
    telegram: BenchTelegram, r: int, messages: int, snapshot: Callable[[], CpuSnapshot]
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
            token = f"tp{r}{j:06d}x"
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
    telegram: BenchTelegram, r: int, per_chat: int, snapshot: Callable[[], CpuSnapshot]
) -> Run:
    """Every chat sends its next message when the previous one was answered."""
    latencies: list[float] = []

    async def user(i: int) -> None:
        for k in range(per_chat):
            trip = await roundtrip(telegram, chat_id(i), f"closed-{r}-{i}-{k}")
            latencies.append(trip.seconds)

    start = snapshot()
    began = time.time()
    await asyncio.gather(*(user(i) for i in range(AGENTS)))
    seconds = time.time() - began
    used = snapshot() - start
    return Run(len(latencies), seconds, latencies, used, len(latencies), len(latencies))


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
