"""The shared harness: result rows, the registry, and the context every benchmark gets.

Every benchmark runs against the fake Anthropic API and the fake Telegram Bot API on loopback
(``fakes.py``), with real Docker containers and a real SQLite store on the real disk (a temp dir
under /var/tmp). Orchestrators run in this process (``inprocess.py``, observed through the log
event stream) or as child processes (``children.py``), of this tree or of the baseline commit
(``trees.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import docker
import docker.errors

from clawpen.runtime.docker import LABEL_INSTANCE

from .trees import CURRENT, MAIN_COMMIT, REPO_ROOT, Tree, check_out_baseline, remove_tree

SCRATCH_PARENT = "/var/tmp"  # the real disk: the store's fsyncs must be real ones
SCRATCH_PREFIX = "cpb-"
PID_FILE = "bench.pid"
INSTANCES_FILE = "instances"

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


def bootstrap_ratio(
    before: list[float], after: list[float], q: float, rounds: int = 1000, seed: int = 1
) -> tuple[float, float]:
    """A 95% interval for ``percentile(after, q) / percentile(before, q)``: how far the ratio
    moves when the same measurement is drawn again (resampled with replacement), i.e. the
    measurement noise on it. Seeded: the same samples give the same interval."""
    draw = random.Random(seed)
    ratios = sorted(
        percentile(draw.choices(after, k=len(after)), q)
        / percentile(draw.choices(before, k=len(before)), q)
        for _ in range(rounds)
    )
    return percentile(ratios, 2.5), percentile(ratios, 97.5)


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


@dataclass(frozen=True)
class Versus:
    """The two figures a ratio row was made of: before (the baseline) and after (this tree)."""

    before: float
    after: float
    unit: str
    digits: int = 2


@dataclass
class Row:
    """One measured quantity: its samples (one for a scalar), unit and targets.

    ``plot`` names the latency plot panel the samples are drawn in (``None``: not drawn);
    ``count`` says what the samples are when "N samples" would mislead (e.g. "2000 messages");
    ``spread``: few samples (rounds), so the report shows their range instead of a p99;
    ``waived``: why the target does not apply on this machine (then it is neither met nor
    missed, and the report says why); ``versus``: the figures a before/after ratio came from.
    """

    name: str
    unit: str
    samples: list[float]
    targets: tuple[Target, ...] = ()
    note: str = ""
    plot: str | None = None
    count: str | None = None
    digits: int = 2
    spread: bool = False
    waived: str = ""
    versus: Versus | None = None

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
        """True or False against the targets; None when the row has none (or they are waived)."""
        if not self.targets or self.waived:
            return None
        return all(t.met(self) for t in self.targets)


def ms(seconds: Iterable[float]) -> list[float]:
    return [s * 1000 for s in seconds]


def ratio_row(
    name: str,
    before: float,
    after: float,
    unit: str,
    targets: tuple[Target, ...] = (),
    digits: int = 2,
    note: str = "",
    waived: str = "",
) -> Row:
    """``after / before`` as a row that remembers both figures (for the before/after table)."""
    value = after / before if before else math.nan
    versus = Versus(before, after, unit, digits)
    return Row(name, "ratio", [value], targets, note=note, waived=waived, versus=versus)


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
    _baseline: Tree | None = None
    _main: Tree | None = None
    _baseline_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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

    @property
    def current(self) -> Tree:
        return CURRENT

    async def baseline(self) -> Tree:
        """The code before the core rebuild, checked out (once per run) into a scratch git
        worktree, with its own agent image; removed at the end of the run."""
        async with self._baseline_lock:
            if self._baseline is None:
                self._baseline = await asyncio.to_thread(
                    check_out_baseline, REPO_ROOT, self.root / "baseline"
                )
            return self._baseline

    async def main(self) -> Tree:
        """main before this issue (``MAIN_COMMIT``), checked out like the baseline."""
        async with self._baseline_lock:
            if self._main is None:
                self._main = await asyncio.to_thread(
                    check_out_baseline, REPO_ROOT, self.root / "main", MAIN_COMMIT, "main"
                )
            return self._main

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

    def close(self) -> None:
        """The end of the run: containers, then the baseline's worktree."""
        self.cleanup()
        for tree in (self._baseline, self._main):
            if tree is not None:
                remove_tree(REPO_ROOT, tree)
        self._baseline = self._main = None


def sweep_stale(client: docker.DockerClient) -> list[Path]:
    """Remove what earlier runs that were killed left behind: their containers, volumes,
    scratch dirs and baseline worktrees. A run that is still alive (its pid file names a live
    process) is left alone."""
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
    if swept:  # forget the worktrees whose directories went with them
        subprocess.run(["git", "worktree", "prune"], cwd=REPO_ROOT, capture_output=True)
    return swept


def remove_instance(client: docker.DockerClient, instance: str) -> None:
    label = {"label": [f"{LABEL_INSTANCE}={instance}"]}
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for volume in client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)


async def wait_until(
    condition: Callable[[], bool], timeout: float, what: str = "a condition", every: float = 0.01
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 (state of other processes: no event to await)
                await asyncio.sleep(every)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}") from None
