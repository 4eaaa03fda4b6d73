"""The report: docs/benchmarks.md (a table per benchmark) and a CDF plot of the latencies.

It renders whatever rows the benchmarks returned, so a new benchmark needs no change here.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors

from .harness import Outcome, Row
from .trees import REPO_ROOT


def machine_info(client: docker.DockerClient | None) -> dict[str, str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo").read_text()
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    info = {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
    }
    if client is not None:
        try:
            version = client.version()
            engine = client.info()
            info["Docker server"] = (
                f"{version.get('Version', '?')} (storage {engine.get('Driver', '?')},"
                f" cgroup v{engine.get('CgroupVersion', '?')},"
                f" runtime {engine.get('DefaultRuntime', '?')})"
            )
        except docker.errors.DockerException as exc:
            info["Docker server"] = f"unreachable ({exc})"
        try:
            others = len(client.containers.list())
            info["load at start"] = (
                "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
                + f", {others} containers already running"
            )
        except docker.errors.DockerException:
            pass
    info["scratch disk"] = _disk("/var/tmp")
    info["commit"] = _git_commit()
    info["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return info


def _disk(path: str) -> str:
    """The device and filesystem type that ``path`` is on (longest matching mount point)."""
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[0]):
            best = (mount, device, kind)
    return f"{path} on {best[1]} ({best[2]}, mounted at {best[0]})"


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (src/ has uncommitted changes)" if dirty else "")


def _number(value: float, digits: int) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:,.{digits}f}"


def _status(row: Row) -> str:
    if row.waived:
        return f"n/a ({row.waived})"
    passed = row.passed
    if passed is None:
        return ""
    return "pass" if passed else "**MISS**"


def _p99(row: Row, unit: str = "") -> str:
    """The p99 column: a p99, or the range of a few samples (rounds), or nothing (scalar)."""
    if row.scalar:
        return "—"
    suffix = f" {unit}" if unit else ""
    if row.spread:
        low, high = min(row.samples), max(row.samples)
        return f"range {_number(low, row.digits)}-{_number(high, row.digits)}{suffix}"
    return f"{_number(row.p99, row.digits)}{suffix}"


def _name(row: Row) -> str:
    return row.name + (f" ({row.note})" if row.note else "")


def _table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| measure | samples | p50 | p99 | unit | target | result |",
        "| --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for row in rows:
        count = row.count or str(row.n)
        p50 = _number(row.p50, row.digits)
        target = ", ".join(t.describe(row.unit, row.scalar) for t in row.targets)
        lines.append(
            f"| {_name(row)} | {count} | {p50} | {_p99(row)} | {row.unit} | {target}"
            f" | {_status(row)} |"
        )
    return lines


def _versus_table(outcomes: Sequence[Outcome]) -> list[str]:
    """Every before/after ratio of the run in one table: both figures and their ratio."""
    compared = [(o.benchmark, r) for o in outcomes for r in o.rows if r.versus is not None]
    if not compared:
        return []
    lines = [
        "| benchmark | measure | before | after | after / before | target | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for bench, row in compared:
        versus = row.versus
        assert versus is not None
        target = ", ".join(t.describe("", True).strip() for t in row.targets)
        lines.append(
            f"| {bench.name} | {_name(row)}"
            f" | {_number(versus.before, versus.digits)} {versus.unit}"
            f" | {_number(versus.after, versus.digits)} {versus.unit}"
            f" | {_number(row.p50, 2)} | {target} | {_status(row)} |"
        )
    return lines


def render(
    outcomes: Sequence[Outcome],
    machine: dict[str, str],
    *,
    quick: bool,
    seconds: float,
    command: str,
    plot: Path | None,
) -> str:
    rows = [r for o in outcomes for r in o.rows]
    missed = [r for r in rows if r.passed is False]
    waived = [r for r in rows if r.targets and r.waived]
    failed = [o for o in outcomes if o.error]
    out = [
        "# Benchmarks",
        "",
        "Generated by `"
        + command
        + "` (do not edit by hand; run it again)."
        + (" **Quick run: fewer samples, smoke test only.**" if quick else ""),
        "",
        "Everything runs on this one machine: the fake Anthropic API (`FakeModel`, zero think"
        " time) and the fake Telegram Bot API (`FakeTelegram`) on loopback, agents in real Docker"
        " containers (unless a row says otherwise), the SQLite store (WAL, `synchronous=FULL`)"
        " on the real disk under /var/tmp. p50/p99 are percentiles over the samples (linear"
        " interpolation); a scalar has its value in the p50 column.",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        f"| bench run time | {seconds:.0f} s |",
        "",
        f"**Summary:** {sum(r.passed is True for r in rows)} targets met,"
        f" {len(missed)} missed"
        + (f" ({', '.join(r.name for r in missed)})" if missed else "")
        + (f", {len(waived)} not applicable on this machine" if waived else "")
        + (f"; {len(failed)} benchmark(s) failed to run" if failed else "")
        + ".",
        "",
    ]
    versus = _versus_table(outcomes)
    if versus:
        out += [
            "**Before and after**, measured in this run on this machine: before is the code"
            " before the core rebuild, checked out from git history and run as a child"
            " process exactly as this tree is; after is this tree.",
            "",
            *versus,
            "",
        ]
    targeted = [(o.benchmark, r) for o in outcomes for r in o.rows if r.targets]
    if targeted:
        out += [
            "| benchmark | measure | p50 | p99 | target | result |",
            "| --- | --- | ---: | ---: | --- | --- |",
        ]
        for bench, row in targeted:
            target = ", ".join(t.describe(row.unit, row.scalar) for t in row.targets)
            out.append(
                f"| {bench.name} | {_name(row)} | {_number(row.p50, row.digits)} {row.unit}"
                f" | {_p99(row, row.unit)} | {target} | {_status(row)} |"
            )
        out.append("")
    if plot is not None:
        out += [f"![latency CDFs]({plot.name})", ""]
    for outcome in outcomes:
        bench = outcome.benchmark
        out += [f"## {bench.title}", "", f"`--only {bench.name}` · {outcome.seconds:.0f} s", ""]
        if bench.about:
            out += [bench.about, ""]
        if outcome.rows:
            out += [*_table(outcome.rows), ""]
        if outcome.error:
            out += [f"**Failed:** `{outcome.error}`", ""]
        out += [f"* {note}" for note in outcome.notes]
        if outcome.notes:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def plot_latencies(outcomes: Sequence[Outcome], path: Path) -> bool:
    """CDFs of every row with a ``plot`` panel, one panel per name; False if nothing to draw."""
    panels: dict[str, list[Row]] = {}
    for outcome in outcomes:
        for row in outcome.rows:
            if row.plot and row.n > 1:
                panels.setdefault(row.plot, []).append(row)
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 if len(panels) > 1 else 1
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6.5 * columns, 3.6 * lines), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels.items(), strict=False):
        for row in rows:
            ordered = sorted(row.samples)
            fraction = [(i + 1) / len(ordered) for i in range(len(ordered))]
            label = f"{row.name} (p50 {row.p50:.4g}, p99 {row.p99:.4g} {row.unit})"
            ax.step(ordered, fraction, where="post", label=label)
        low = min(min(r.samples) for r in rows)
        high = max(max(r.samples) for r in rows)
        if low > 0 and high / low > 20:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(rows[0].unit)
        ax.set_ylabel("fraction ≤ x")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
