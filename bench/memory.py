"""4. Memory: an idle agent container, and the orchestrator's processes with 50 agents."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from clawpen.runtime.docker import LABEL_INSTANCE
from clawpen.runtime.pool import instance_id

from .children import orchestrator_process
from .fakes import chat_id, config, fake_model, fake_telegram
from .harness import BenchContext, Row, at_most, benchmark, ratio_row
from .procs import TreeMemory, proc_status, pss_kb, tree_memory
from .trees import Tree

IDLE = 3.0  # seconds of idleness after the last reply before measuring
MB = 1024 * 1024


@dataclass
class ContainerMemory:
    vm_rss: float  # MB: sum of VmRSS of the container's processes, read on the host
    pss: float  # MB: sum of their PSS (shared pages split between users)
    cgroup_rss: float  # MB: memory_stats.stats.rss (cgroup v1) or anon (v2)
    cgroup_usage: float  # MB: memory_stats.usage (includes page cache)
    processes: int


@benchmark(
    "memory",
    "Memory: idle agent containers and the orchestrator with 50 agents, before and after",
    """`clawpen run` as its own process with 50 agents (`warm: true`, `max_containers: 60`), each
    paired with its own Telegram chat; one message to each chat, all 50 replies received, then
    3 s idle. Orchestrator: RSS and PSS summed over its process tree (it and every process it
    started, such as channel adapters), and its own peak (VmHWM). Each agent container: the
    VmRSS (and PSS) of its processes summed from /proc on the host (pids from
    `container.top()`), and the cgroup's own figures from `container.stats()` (cgroup v1:
    `stats.rss`, and `usage`, which also counts page cache). Then the same for the baseline's
    orchestrator (the code before the core rebuild), with the same 50 agents.""",
)
async def memory(ctx: BenchContext) -> list[Row]:
    agents = 50  # the target is for 50; --quick keeps it (about 12 s)
    baseline = await ctx.baseline()
    after, per_container = await idle_orchestrator(ctx, ctx.current, agents, containers=True)
    before, _ = await idle_orchestrator(ctx, baseline, agents, containers=False)
    label = f"{agents} agents"
    rows = [
        Row(
            f"orchestrator processes PSS summed with {label} ({plural(after.processes)})",
            "MB",
            [after.pss_mb],
            at_most(150),
            digits=1,
        ),
        Row(
            f"orchestrator processes RSS summed with {label} (shared pages once per process)",
            "MB",
            [after.rss_mb],
            digits=1,
        ),
        Row("orchestrator VmHWM (its own peak RSS so far)", "MB", [after.root_hwm_mb], digits=1),
        Row(
            f"{baseline.label}: orchestrator processes RSS summed ({plural(before.processes)})",
            "MB",
            [before.rss_mb],
            digits=1,
        ),
        Row(
            f"{baseline.label}: orchestrator processes PSS summed", "MB", [before.pss_mb], digits=1
        ),
        ratio_row(
            f"orchestrator processes RSS with {label}, after / before",
            before.rss_mb,
            after.rss_mb,
            "MB",
            digits=1,
        ),
        ratio_row(
            f"orchestrator processes PSS with {label}, after / before",
            before.pss_mb,
            after.pss_mb,
            "MB",
            digits=1,
        ),
        Row(
            "idle agent container: VmRSS of its processes",
            "MB",
            [c.vm_rss for c in per_container],
            at_most(50),
            digits=1,
        ),
        Row(
            "idle agent container: PSS of its processes",
            "MB",
            [c.pss for c in per_container],
            digits=1,
        ),
        Row(
            "idle agent container: cgroup stats.rss",
            "MB",
            [c.cgroup_rss for c in per_container],
            at_most(50),
            digits=1,
        ),
        Row(
            "idle agent container: cgroup usage (incl. page cache)",
            "MB",
            [c.cgroup_usage for c in per_container],
            digits=1,
        ),
        Row(
            f"all {label}' containers: VmRSS summed",
            "MB",
            [sum(c.vm_rss for c in per_container)],
            digits=0,
        ),
        Row(
            f"all {label}' containers: PSS summed",
            "MB",
            [sum(c.pss for c in per_container)],
            digits=0,
        ),
        Row(
            f"all {label}' containers: cgroup usage summed",
            "MB",
            [sum(c.cgroup_usage for c in per_container)],
            digits=0,
        ),
    ]
    processes = sorted({c.processes for c in per_container})
    ctx.note(
        f"Each container runs {'/'.join(map(str, processes))} processes (docker-init and the"
        " agent's python3). VmRSS counts shared pages (the python3 binary and libraries, shared"
        " by every container through the same image layers) once per process; PSS splits them."
    )
    return rows


def plural(processes: int) -> str:
    return f"{processes} process" + ("es" if processes != 1 else "")


async def idle_orchestrator(
    ctx: BenchContext, tree: Tree, agents: int, containers: bool
) -> tuple[TreeMemory, list[ContainerMemory]]:
    """Start ``tree``'s orchestrator with ``agents`` warm agents, answer one message in each
    chat, idle, and measure its process tree (and, with ``containers``, every container)."""
    per_container: list[ContainerMemory] = []
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        data_dir = ctx.data_dir(f"mem{'b' if tree.baseline else 'a'}")
        raw = config(
            data_dir, model.url, ctx.api_key, telegram, agents, warm=True, max_containers=60
        )
        async with orchestrator_process(ctx, tree, raw) as process:
            replies = [telegram.expect(f"echo: hello-{i}") for i in range(agents)]
            for i in range(agents):
                await telegram.push_text(chat_id(i), f"hello-{i}")
            async with asyncio.timeout(300):
                await asyncio.gather(*replies)
            await asyncio.sleep(IDLE)
            memory = tree_memory(process.pid)
            if containers:
                per_container = await asyncio.to_thread(
                    measure_containers, instance_id(data_dir), agents
                )
    return memory, per_container


def measure_containers(instance: str, expected: int) -> list[ContainerMemory]:
    """All of the instance's containers at once: dockerd answers a one-shot stats request at
    its next collection tick (about 1 s here), so one at a time would take a second each."""
    label = {"label": [f"{LABEL_INSTANCE}={instance}"], "status": "running"}
    client = docker.from_env(max_pool_size=expected + 4)
    try:
        containers = client.containers.list(filters=label)
        if len(containers) != expected:
            raise RuntimeError(
                f"expected {expected} running agent containers, found {len(containers)}"
            )
        with ThreadPoolExecutor(max_workers=len(containers)) as pool:
            return list(pool.map(container_memory, containers))
    finally:
        client.close()


def container_memory(container: Container) -> ContainerMemory:
    top: dict[str, Any] = container.top()
    column = top["Titles"].index("PID")
    pids = [int(process[column]) for process in top["Processes"]]
    vm_rss = sum(proc_status(pid).get("VmRSS", 0) for pid in pids) / 1024
    pss = sum(pss_kb(pid) for pid in pids) / 1024
    try:
        stats = container.stats(stream=False, one_shot=True)
    except docker.errors.APIError:  # engines before API 1.41: two samples, ~1 s
        stats = container.stats(stream=False)
    memory = stats["memory_stats"]
    detail = memory.get("stats", {})
    cgroup_rss = detail.get("rss", detail.get("anon", 0)) / MB
    return ContainerMemory(vm_rss, pss, cgroup_rss, memory.get("usage", 0) / MB, len(pids))
