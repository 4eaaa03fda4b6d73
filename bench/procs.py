"""CPU and memory of processes, read from /proc: the orchestrator with every process it
started (its process tree), the agent containers' processes, this process, the machine.

An orchestrator is measured as its whole tree, so that work moved into child processes (a
channel adapter in a process of its own) is counted, not hidden: CPU is the tree's
user + system time plus what its exited children used (reaped, so in their parent's
``cutime``/``cstime``); memory is the sum of RSS (shared pages counted once per process) and
of PSS (shared pages split between the processes that share them) over the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import docker

from clawpen.runtime.docker import LABEL_INSTANCE

from .harness import BenchContext

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            tree.append(pid)
            todo += children.get(pid, [])
    return tree


def process_cpu(pid: int, reaped: bool = False) -> float:
    """utime + stime of a process (all its threads), seconds; with ``reaped``, plus what its
    exited children used; 0 if it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if reaped:
        used += int(fields[13]) + int(fields[14])
    return used / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root``'s process tree, including its children that already exited."""
    return sum(process_cpu(pid, reaped=True) for pid in process_tree(root))


def threads_cpu(pid: int) -> float:
    """Seconds on a CPU of the process's threads alive now, summed (schedstat: nanoseconds,
    where utime/stime count 10 ms ticks: fine enough for a process that is almost idle)."""
    used = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            used += int((task / "schedstat").read_text().split()[0])
    return used / 1e9


def thread_schedule(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the process's main thread,
    the one that runs the event loop (/proc/PID/task/PID/schedstat); (0, 0) if it is gone."""
    try:
        on_cpu, waiting = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def proc_status(pid: int) -> dict[str, int]:
    """The ``Vm*``/``Rss*`` lines of /proc/PID/status, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith(("Vm", "Rss")):
            values[key] = int(rest.split()[0])
    return values


def pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between their users), kB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class TreeMemory:
    rss_mb: float  # VmRSS summed over the processes
    pss_mb: float  # PSS summed over the processes
    root_hwm_mb: float  # the root process's peak RSS so far (VmHWM)
    processes: int


def tree_memory(root: int) -> TreeMemory:
    rss = pss = 0
    pids = process_tree(root)
    for pid in pids:
        with contextlib.suppress(OSError):
            rss += proc_status(pid).get("VmRSS", 0)
            pss += pss_kb(pid)
    hwm = proc_status(root).get("VmHWM", 0)
    return TreeMemory(rss / 1024, pss / 1024, hwm / 1024, len(pids))


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the parts of a run, and by the whole machine."""

    orchestrator: float  # the orchestrator's process tree
    loop_cpu: float  # its main thread (the event loop's) on a CPU
    loop_wait: float  # its main thread runnable, waiting for a CPU (the machine was busy)
    agents: float  # the agent containers' processes (0 for the in-process runtime)
    bench: float  # this process: the fakes and the driver
    machine_busy: float
    machine_total: float  # busy + idle, over all cores

    def __sub__(self, other: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            self.orchestrator - other.orchestrator,
            self.loop_cpu - other.loop_cpu,
            self.loop_wait - other.loop_wait,
            self.agents - other.agents,
            self.bench - other.bench,
            self.machine_busy - other.machine_busy,
            self.machine_total - other.machine_total,
        )

    @property
    def machine_share(self) -> float:
        """Busy fraction of all cores (0..1)."""
        return self.machine_busy / self.machine_total if self.machine_total else math.nan


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / TICK, total / TICK


def cpu_snapshot(orchestrator_pid: int, agent_pids: Iterable[int] = ()) -> CpuSnapshot:
    times = os.times()
    busy, total = machine_cpu()
    loop_cpu, loop_wait = thread_schedule(orchestrator_pid)
    return CpuSnapshot(
        orchestrator=tree_cpu(orchestrator_pid),
        loop_cpu=loop_cpu,
        loop_wait=loop_wait,
        agents=sum(process_cpu(pid) for pid in agent_pids),
        bench=times.user + times.system,
        machine_busy=busy,
        machine_total=total,
    )


def container_pids(client: docker.DockerClient, instance: str) -> list[int]:
    """Host pids of every process in the instance's running containers."""
    label = {"label": [f"{LABEL_INSTANCE}={instance}"], "status": "running"}
    pids = []
    for container in client.containers.list(filters=label):
        top = container.top()
        column = top["Titles"].index("PID")
        pids += [int(process[column]) for process in top["Processes"]]
    return pids


@contextlib.asynccontextmanager
async def profiled(ctx: BenchContext, pid: int, name: str) -> AsyncIterator[None]:
    """With ``--profile DIR``: py-spy samples process ``pid`` and its children (250 Hz,
    without pausing them) for the body of the ``with`` into DIR/NAME.folded, folded stacks:
    feed them to ``python -m bench.profile_summary`` or to any flame graph tool."""
    if ctx.profile is None:
        yield
        return
    ctx.profile.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    output = str(ctx.profile / f"{name}.folded")
    spy = await asyncio.create_subprocess_exec(
        *(py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"),
        *("--subprocesses", "--format", "raw", "--output", output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


def cgroup_cpu_path(cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> Path | None:
    """The file holding a cgroup's CPU time, from a process's /proc/PID/cgroup text: cgroup
    v1's ``cpuacct.usage`` (nanoseconds) or v2's ``cpu.stat`` (``usage_usec``)."""
    unified = None
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "cpuacct" in controllers.split(","):
            return root / "cpuacct" / path.lstrip("/") / "cpuacct.usage"
        if controllers == "" and parts[0] == "0":
            unified = root / path.lstrip("/") / "cpu.stat"
    return unified


def parse_cgroup_cpu(path: Path, text: str) -> float:
    """Seconds of CPU in the text of a file ``cgroup_cpu_path`` named."""
    if path.name == "cpuacct.usage":
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise ValueError(f"no usage_usec in {path}")


def container_cgroups(client: docker.DockerClient, instance: str) -> list[Path]:
    """The CPU-time files of the instance's running containers' cgroups: everything a
    container ran is counted, processes that came and went included."""
    label = {"label": [f"{LABEL_INSTANCE}={instance}"], "status": "running"}
    found = []
    for container in client.containers.list(filters=label):
        pid = container.attrs["State"]["Pid"]
        path = cgroup_cpu_path(Path(f"/proc/{pid}/cgroup").read_text())
        if path is not None and path.exists():
            found.append(path)
    return found


def cgroups_cpu(paths: Iterable[Path]) -> float:
    """CPU seconds used so far by these cgroups (0 for one that is gone)."""
    used = 0.0
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            used += parse_cgroup_cpu(path, path.read_text())
    return used
