"""6. Idle cost: the CPU the orchestrator's processes use when there is nothing to do."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .children import orchestrator_process
from .fakes import chat_id, config, fake_model, fake_telegram, roundtrip
from .harness import BenchContext, Row, at_most, benchmark
from .procs import machine_cpu, process_tree, profiled, threads_cpu

SETTLE = 2.0  # seconds after the last reply before the window opens


@benchmark(
    "idle",
    "Idle cost: the orchestrator's processes with nothing to do",
    """`clawpen run` as its own process with one agent (`warm: true`) paired with a Telegram
    chat and the Telegram adapter long-polling the fake (`poll_timeout` 10 s, as the other
    benchmarks). One message answered, then a window with nothing to do (30 s; 5 s with
    `--quick`): the CPU time of the orchestrator's process tree (it and every process it
    started, such as the channel adapter) over the window, as a share of one core. The agent's
    container is not counted (it is the agent's, not the orchestrator's).""",
)
async def idle(ctx: BenchContext) -> list[Row]:
    window = ctx.size(30, 5)
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        raw = config(ctx.data_dir("idle"), model.url, ctx.api_key, telegram, 1, warm=True)
        async with orchestrator_process(ctx, ctx.current, raw) as process:
            await roundtrip(telegram, chat_id(0), "wake")
            await asyncio.sleep(SETTLE)
            pids = process_tree(process.pid)
            names = {pid: describe(pid) for pid in pids}
            each = {pid: threads_cpu(pid) for pid in pids}
            busy, total = machine_cpu()
            async with profiled(ctx, process.pid, "idle"):
                await asyncio.sleep(window)
            each = {pid: threads_cpu(pid) - each[pid] for pid in pids}
            used = sum(each.values())
            machine = machine_cpu()
            share = (machine[0] - busy) / (machine[1] - total)
    ctx.note(
        f"Over {window} s idle the orchestrator's processes used {used * 1000:.1f} ms of CPU;"
        f" the machine was {share:.0%} busy meanwhile (other tenants: a busy machine makes"
        " each wake-up dearer, so this is an upper bound). CPU time is the kernel's per-thread"
        " schedstat (nanoseconds) summed over the processes' threads. The event-loop probe"
        " looks every 250 ms while the loop is idle and every 10 ms while it works."
    )
    return [
        Row(
            "orchestrator processes idle, CPU share of one core",
            "%",
            [used / window * 100],
            at_most(0.5),
            digits=3,
        ),
        *(
            Row(f"  of which {names[pid]}", "%", [seconds / window * 100], digits=3)
            for pid, seconds in each.items()
        ),
    ]


def describe(pid: int) -> str:
    """A process by what it runs: the orchestrator, or the module a child runs."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"process {pid} (exited)"
    words = [a.decode(errors="replace") for a in argv if a]
    if "-m" in words[:-1]:
        module = words[words.index("-m") + 1]
        return "the orchestrator" if module == "clawpen" else f"`{module}` (pid {pid})"
    return f"`{' '.join(words[:3])}` (pid {pid})"
