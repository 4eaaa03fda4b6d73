"""The shared harness: the registry, result rows, the fakes, orchestrators (in this process or
as a child process) and the small measuring tools the benchmarks have in common.

Every benchmark runs against the fake Anthropic API (``FakeModel``, zero think time) and the
fake Telegram Bot API (``FakeTelegram``) on loopback, with real Docker containers and a real
SQLite store on the real disk (a temp dir under /var/tmp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import docker
import docker.errors
from aiohttp import web

from clawpen.agents import instance_id
from clawpen.app import Orchestrator
from clawpen.config import Settings
from clawpen.models import InboundMessage
from clawpen.runtime.base import AgentRuntime
from clawpen.runtime.docker import LABEL_INSTANCE, DockerRuntime, connect
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.testing.fake_model import FakeModel
from clawpen.testing.fake_telegram import FakeTelegram

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRATCH_PARENT = "/var/tmp"  # the real disk: the store's fsyncs must be real ones
SCRATCH_PREFIX = "cpb-"
PID_FILE = "bench.pid"
INSTANCES_FILE = "instances"
FIRST_CHAT = 1001
RuntimeKind = Literal["docker", "inprocess"]

# -- results ---------------------------------------------------------------------------------------

Stat = Literal["p50", "p99"]
Op = Literal["<=", ">="]


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100), interpolated linearly between closest ranks."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Target:
    """``stat op value``, e.g. p99 <= 20 (in the row's unit)."""

    stat: Stat
    op: Op
    value: float

    def met(self, row: Row) -> bool:
        actual = row.stat(self.stat)
        return actual <= self.value if self.op == "<=" else actual >= self.value

    def describe(self, unit: str, scalar: bool) -> str:
        symbol = "≤" if self.op == "<=" else "≥"
        what = "" if scalar else f"{self.stat} "
        return f"{what}{symbol} {self.value:g} {unit}"


def at_most(p50: float | None = None, p99: float | None = None) -> tuple[Target, ...]:
    targets = []
    if p50 is not None:
        targets.append(Target("p50", "<=", p50))
    if p99 is not None:
        targets.append(Target("p99", "<=", p99))
    return tuple(targets)


def at_least(value: float) -> tuple[Target, ...]:
    return (Target("p50", ">=", value),)


@dataclass
class Row:
    """One measured quantity: its samples (one for a scalar), unit and targets.

    ``plot`` names the latency plot panel the samples are drawn in (``None``: not drawn);
    ``count`` says what the samples are when "N samples" would mislead (e.g. "2000 messages").
    """

    name: str
    unit: str
    samples: list[float]
    targets: tuple[Target, ...] = ()
    note: str = ""
    plot: str | None = None
    count: str | None = None
    digits: int = 2

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def scalar(self) -> bool:
        return len(self.samples) == 1

    def stat(self, name: Stat) -> float:
        return percentile(self.samples, 50 if name == "p50" else 99)

    @property
    def p50(self) -> float:
        return self.stat("p50")

    @property
    def p99(self) -> float:
        return self.stat("p99")

    @property
    def passed(self) -> bool | None:
        """True or False against the targets; None when the row has none."""
        if not self.targets:
            return None
        return all(t.met(self) for t in self.targets)


def ms(seconds: Iterable[float]) -> list[float]:
    return [s * 1000 for s in seconds]


# -- the registry ----------------------------------------------------------------------------------


BenchFn = Callable[["BenchContext"], Awaitable[list[Row]]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    about: str
    run: BenchFn


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, title: str, about: str = "") -> Callable[[BenchFn], BenchFn]:
    """Register ``async def fn(ctx) -> list[Row]`` under ``name`` (for ``--only NAME``)."""

    def register(fn: BenchFn) -> BenchFn:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = Benchmark(name, title, " ".join(about.split()), fn)
        return fn

    return register


@dataclass
class Outcome:
    """What running one benchmark gave: its rows, notes, time taken, or the error it died of."""

    benchmark: Benchmark
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


# -- the context every benchmark gets --------------------------------------------------------------


@dataclass
class BenchContext:
    quick: bool
    root: Path  # scratch space on the real disk (/var/tmp), removed at the end
    docker: docker.DockerClient
    image: str
    api_key: str
    log: TextIO  # the in-process orchestrators' JSON log lines go here
    profile: Path | None = None  # --profile DIR: py-spy profiles of child orchestrators
    notes: list[str] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)
    _dirs: int = 0

    def size(self, full: int, quick: int) -> int:
        """A sample count: ``full`` normally, ``quick`` with --quick."""
        return quick if self.quick else full

    def note(self, text: str) -> None:
        """A sentence for the report, under the running benchmark's table."""
        self.notes.append(" ".join(text.split()))

    def data_dir(self, name: str) -> Path:
        """A fresh data dir (short: socket paths are limited to 107 bytes)."""
        self._dirs += 1
        path = self.root / f"{self._dirs:02d}{name[:8]}"
        path.mkdir(parents=True)
        return path

    def track(self, instance: str) -> None:
        """Containers and volumes labelled with ``instance`` are removed after the benchmark
        (and by the next run's ``sweep_stale`` if this one is killed before it can)."""
        if instance not in self.instances:
            with (self.root / INSTANCES_FILE).open("a") as record:
                record.write(instance + "\n")
        self.instances.add(instance)

    def cleanup(self) -> None:
        for instance in sorted(self.instances):
            remove_instance(self.docker, instance)
        self.instances.clear()


def sweep_stale(client: docker.DockerClient) -> list[Path]:
    """Remove what earlier runs that were killed left behind: their containers, volumes and
    scratch dirs. A run that is still alive (its pid file names a live process) is left alone."""
    swept = []
    for root in sorted(Path(SCRATCH_PARENT).glob(f"{SCRATCH_PREFIX}*")):
        with contextlib.suppress(OSError, ValueError):
            pid = int((root / PID_FILE).read_text())
            if Path(f"/proc/{pid}").exists():
                continue
        with contextlib.suppress(OSError):
            for instance in (root / INSTANCES_FILE).read_text().split():
                remove_instance(client, instance)
        shutil.rmtree(root, ignore_errors=True)
        swept.append(root)
    return swept


def remove_instance(client: docker.DockerClient, instance: str) -> None:
    label = {"label": [f"{LABEL_INSTANCE}={instance}"]}
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for volume in client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)


# -- fakes -----------------------------------------------------------------------------------------


@dataclass
class BenchTelegram(FakeTelegram):
    """The fake Bot API, timestamping every sendMessage as it arrives.

    ``expect(text)`` gives a future that resolves to the arrival time of a reply with exactly
    that text; ``on_reply`` sees every reply (for counting batched ones)."""

    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    on_reply: Callable[[str, float], None] | None = None

    async def start(self, port: int = 0) -> str:
        # As FakeTelegram.start, but a held-open getUpdates is cancelled when the client goes
        # away, so that closing does not wait out the long-poll timeout.
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._call)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self.url

    def expect(self, text: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[text] = future
        return future

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        arrived = time.time()
        response = await super()._send_message(params)
        if response.status == 200:
            text = str(params.get("text", ""))
            if self.on_reply is not None:
                self.on_reply(text, arrived)
            waiter = self.waiters.pop(text, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(arrived)
        return response


@contextlib.asynccontextmanager
async def fake_model(ctx: BenchContext) -> AsyncIterator[FakeModel]:
    model = FakeModel(api_key=ctx.api_key, delay=0.0)
    await model.start()
    try:
        yield model
    finally:
        await model.close()


@contextlib.asynccontextmanager
async def fake_telegram() -> AsyncIterator[BenchTelegram]:
    telegram = BenchTelegram()
    await telegram.start()
    try:
        yield telegram
    finally:
        await telegram.close()


async def roundtrip(
    telegram: BenchTelegram, chat: int, text: str, timeout: float = 60
) -> tuple[float, float]:
    """A user writes ``text``; returns (time pushed, time the echo reply reached the fake)."""
    waiter = telegram.expect(f"echo: {text}")
    pushed = time.time()
    await telegram.push_text(chat, text)
    async with asyncio.timeout(timeout):
        arrived = await waiter
    return pushed, arrived


# -- configuration ---------------------------------------------------------------------------------


def agent_id(i: int) -> str:
    return f"a{i:02d}"


def chat_id(i: int) -> int:
    return FIRST_CHAT + i


def config(
    data_dir: Path,
    model_url: str,
    api_key: str,
    telegram: FakeTelegram,
    agents: int = 1,
    *,
    poll_timeout: int = 10,
    max_containers: int = 10,
    **agent_options: Any,
) -> dict[str, Any]:
    """A clawpen config: agent ``aNN`` paired with telegram chat ``1001 + NN``."""
    return {
        "data_dir": str(data_dir),
        "max_containers": max_containers,
        "model": {"name": "claude-bench", "base_url": model_url, "api_key": api_key},
        "agents": [
            {"id": agent_id(i), "system_prompt": "You are a benchmark.", **agent_options}
            for i in range(agents)
        ],
        "channels": {
            "telegram": {
                "token": telegram.token,
                "api_base_url": telegram.url,
                "poll_timeout": poll_timeout,
            }
        },
        "pairings": [
            {"channel": f"telegram:{chat_id(i)}", "agent": agent_id(i)} for i in range(agents)
        ],
    }


def settings(raw: dict[str, Any]) -> Settings:
    return Settings.model_validate(raw)


def write_config(path: Path, raw: dict[str, Any]) -> dict[str, str]:
    """Write ``raw`` as a config file (JSON is YAML) with its secrets as ``env:`` references;
    returns the environment that resolves them."""
    env = {"ANTHROPIC_API_KEY": raw["model"]["api_key"]}
    on_disk = json.loads(json.dumps(raw))
    on_disk["model"]["api_key"] = "env:ANTHROPIC_API_KEY"
    if "telegram" in on_disk["channels"]:
        env["TELEGRAM_BOT_TOKEN"] = on_disk["channels"]["telegram"]["token"]
        on_disk["channels"]["telegram"]["token"] = "env:TELEGRAM_BOT_TOKEN"
    path.write_text(json.dumps(on_disk, indent=2) + "\n")
    return env


# -- probes on an in-process orchestrator ---------------------------------------------------------


@dataclass
class Probes:
    """Wall-clock times (``time.time()``; containers share the host's clock) keyed by text.

    accepted:   message text -> when ``Dispatcher.accept`` was entered
    agent:      first line of a task -> ``TaskResult.extra`` (``received``, ``answered``)
    send_calls: reply text -> when the channel's ``send`` was called
    starts:     durations of ``runtime.start`` (container create + start), seconds
    """

    accepted: dict[str, float] = field(default_factory=dict)
    agent: dict[str, dict[str, Any]] = field(default_factory=dict)
    send_calls: dict[str, float] = field(default_factory=dict)
    starts: list[float] = field(default_factory=list)

    def inbound(self, text: str) -> float:
        """Seconds from the orchestrator receiving ``text`` to the agent starting on it."""
        return float(self.agent[text]["received"]) - self.accepted[text]

    def outbound(self, text: str) -> float:
        """Seconds from the agent's final answer to ``text`` to the platform send call."""
        return self.send_calls[f"echo: {text}"] - float(self.agent[text]["answered"])


def install_probes(orchestrator: Orchestrator) -> Probes:
    """Wrap accept, every session's run, the channels' send and the runtime's start (instance
    attributes only). Call before ``orchestrator.run()``: channels bind ``accept`` there."""
    probes = Probes()
    accept = orchestrator.dispatcher.accept

    async def timed_accept(message: InboundMessage) -> Any:
        probes.accepted[message.text] = time.time()
        return await accept(message)

    orchestrator.dispatcher.accept = timed_accept  # type: ignore[method-assign]

    for session in orchestrator.pool.sessions.values():
        run = session.run

        async def timed_run(task: Any, timeout: float, run: Any = run) -> Any:
            result = await run(task, timeout)
            probes.agent[task.lines[0].text] = dict(result.extra)
            return result

        session.run = timed_run  # type: ignore[method-assign]

    for channel in orchestrator.channels.values():
        send = channel.send

        async def timed_send(chat: str, text: str, send: Any = send) -> str:
            probes.send_calls[text] = time.time()
            return str(await send(chat, text))

        channel.send = timed_send  # type: ignore[method-assign,assignment]

    start = orchestrator.runtime.start

    async def timed_start(spec: Any) -> str:
        began = time.perf_counter()
        try:
            return await start(spec)
        finally:
            probes.starts.append(time.perf_counter() - began)

    orchestrator.runtime.start = timed_start  # type: ignore[method-assign]
    return probes


def make_runtime(kind: RuntimeKind, settings: Settings) -> AgentRuntime:
    if kind == "docker":
        runtime = DockerRuntime(connect(settings.docker_host), instance_id(settings.data_dir))
        runtime.check_image(settings.image)
        return runtime
    return InProcessRuntime(settings.data_dir / "workspaces")


@contextlib.asynccontextmanager
async def orchestrator(
    ctx: BenchContext, raw: dict[str, Any], runtime: RuntimeKind = "docker"
) -> AsyncIterator[tuple[Orchestrator, Probes]]:
    """An orchestrator running in this process (in the background) with probes installed."""
    cfg = settings(raw)
    ctx.track(instance_id(cfg.data_dir))
    orch = Orchestrator(cfg, runtime=make_runtime(runtime, cfg))
    probes = install_probes(orch)
    task = asyncio.create_task(orch.run(), name=f"orchestrator-{runtime}")
    try:
        ready = asyncio.create_task(orch.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()  # raises what the orchestrator died of
            raise TimeoutError("the orchestrator did not become ready within 60 s")
        yield orch, probes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- an orchestrator as a child process ------------------------------------------------------------


class OrchestratorProcess:
    """``python -m clawpen run`` (or ``bench.orchestrator_proc`` for the in-process runtime) in a
    child process under ``bench.guard`` (which stops it if the bench dies), with its JSON log in
    a file next to its config."""

    def __init__(self, config_path: Path, env: dict[str, str], runtime: RuntimeKind = "docker"):
        self.config = config_path
        self.env = {**os.environ, **env}
        self.runtime = runtime
        self.log = config_path.with_suffix(".log")
        self.errors = config_path.with_suffix(".err")
        self.pid_file = config_path.with_suffix(".pid")
        self.process: asyncio.subprocess.Process | None = None  # the guard
        self.pid = 0  # the orchestrator's own pid

    def command(self) -> list[str]:
        if self.runtime == "docker":
            orchestrator = ["-m", "clawpen", "run", "--config", str(self.config)]
        else:
            orchestrator = ["-m", "bench.orchestrator_proc", "--runtime", self.runtime]
            orchestrator += ["--config", str(self.config)]
        guard = [sys.executable, "-m", "bench.guard", "--pid-file", str(self.pid_file), "--"]
        return [*guard, sys.executable, *orchestrator]

    async def start(self, timeout: float = 60) -> None:
        with self.log.open("wb") as out, self.errors.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                env=self.env,
                stdout=out,
                stderr=err,
                cwd=REPO_ROOT,
            )
        async with asyncio.timeout(timeout):
            while not self.events("orchestrator_started") or not self.pid:
                with contextlib.suppress(OSError, ValueError):
                    self.pid = int(self.pid_file.read_text())
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"the orchestrator exited with {self.process.returncode}:"
                        f" {self.errors.read_text()[-2000:]}"
                    )
                await asyncio.sleep(0.05)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        with contextlib.suppress(FileNotFoundError), self.log.open() as log:
            for line in log:
                if f'"{name}"' in line:
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        if entry.get("event") == name:
                            found.append(entry)
        return found

    async def stop(self, timeout: float = 120) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)  # the guard passes it on, once
        try:
            async with asyncio.timeout(timeout):
                return await self.process.wait()
        except TimeoutError:
            if self.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            self.process.kill()
            return await self.process.wait()


@contextlib.asynccontextmanager
async def orchestrator_process(
    ctx: BenchContext, raw: dict[str, Any], runtime: RuntimeKind = "docker"
) -> AsyncIterator[OrchestratorProcess]:
    data_dir = Path(raw["data_dir"])
    ctx.track(instance_id(data_dir))
    env = write_config(data_dir / "clawpen.yaml", raw)
    process = OrchestratorProcess(data_dir / "clawpen.yaml", env, runtime)
    try:
        await process.start()
        yield process
    finally:
        await process.stop()


# -- small tools -----------------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], bool], timeout: float, what: str = "a condition", every: float = 0.01
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 (state of other processes: no event to await)
                await asyncio.sleep(every)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}") from None


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


@contextlib.asynccontextmanager
async def profiled(ctx: BenchContext, pid: int, name: str) -> AsyncIterator[None]:
    """With ``--profile DIR``: py-spy samples process ``pid`` (250 Hz, without pausing it) for
    the body of the ``with`` into DIR/NAME.folded, folded stacks: feed them to
    ``python -m bench.profile_summary`` or to any flame graph tool."""
    if ctx.profile is None:
        yield
        return
    ctx.profile.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    output = str(ctx.profile / f"{name}.folded")
    spy = await asyncio.create_subprocess_exec(
        *(py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"),
        *("--format", "raw", "--output", output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the parts of a run, and by the whole machine."""

    orchestrator: float
    agents: float  # the agent containers' processes (0 for the in-process runtime)
    bench: float  # this process: the fakes and the driver
    machine_busy: float
    machine_total: float  # busy + idle, over all cores

    def __sub__(self, other: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            self.orchestrator - other.orchestrator,
            self.agents - other.agents,
            self.bench - other.bench,
            self.machine_busy - other.machine_busy,
            self.machine_total - other.machine_total,
        )

    @property
    def machine_share(self) -> float:
        """Busy fraction of all cores (0..1)."""
        return self.machine_busy / self.machine_total if self.machine_total else math.nan


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds; 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    total = sum(values)
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def cpu_snapshot(orchestrator_pid: int, agent_pids: Iterable[int] = ()) -> CpuSnapshot:
    times = os.times()
    busy, total = machine_cpu()
    return CpuSnapshot(
        orchestrator=process_cpu(orchestrator_pid),
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


def commit_latencies(directory: Path, count: int) -> list[float]:
    """Seconds per SQLite commit of one small row, configured as the store is (WAL,
    synchronous=FULL), on the disk under ``directory``: the price of each durable step."""
    path = directory / "commits.db"
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT)")
        samples = []
        for i in range(count):
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (value) VALUES (?)", (f"row {i}",))
            db.execute("COMMIT")
            samples.append(time.perf_counter() - began)
        return samples
    finally:
        db.close()
