"""``python -m bench [--quick] [--only NAME[,NAME]]``: run the benchmarks, write the report.

Run from the repository root. Needs the Docker engine; builds the agent image first (cached
layers make that quick) so the containers run the code in this tree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import docker
import docker.errors
import uvloop

from clawpen.obs import logging as clawpen_logging
from clawpen.runtime.image import DEFAULT_TAG, build_agent_image

from . import MODULES, ON_REQUEST, PEERS
from .harness import (
    PID_FILE,
    REGISTRY,
    SCRATCH_PARENT,
    SCRATCH_PREFIX,
    BenchContext,
    Benchmark,
    Outcome,
    Row,
    sweep_stale,
)
from .report import machine_info, plot_latencies, render
from .trees import BASELINE_COMMIT, REPO_ROOT

DEFAULT_REPORT = REPO_ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these benchmarks (repeat or comma-separate): {', '.join(MODULES)}",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help="where to write the Markdown report; the plot goes next to it as NAME-latency.png",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles (folded stacks) of the child orchestrators into DIR",
    )
    parser.add_argument(
        "--peer",
        choices=PEERS,
        help="also run the peer benchmark against this system (installs it once into"
        " ~/.cache/clawpen-bench)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, dbs)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser.parse_args(argv)


def load() -> None:
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")


def select(only: list[str], peer: str | None = None) -> list[Benchmark]:
    """The benchmarks ``--only`` names (all when none); those against a peer only with
    ``--peer``, which alone runs them with the rest."""
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; known: {', '.join(REGISTRY)}")
    asked = [n for n in names if n in ON_REQUEST]
    if asked and peer is None:
        raise SystemExit(f"{asked[0]!r} runs against a peer: add --peer {PEERS[0]}")
    return [
        b
        for name, b in REGISTRY.items()
        if (name in names if names else peer is not None or name not in ON_REQUEST)
    ]


def summary(row: Row) -> str:
    if row.scalar:
        p99 = ""
    elif row.spread:
        p99 = f" range {min(row.samples):.{row.digits}f}-{max(row.samples):.{row.digits}f}"
    else:
        p99 = f" p99 {row.p99:.{row.digits}f}"
    verdict = {None: "", True: "  pass", False: "  MISS"}[row.passed]
    if row.waived:
        verdict = f"  n/a ({row.waived})"
    note = f" [{row.note}]" if row.note else ""
    return f"  {row.name}: p50 {row.p50:.{row.digits}f}{p99} {row.unit} (n={row.n}){note}{verdict}"


async def run_all(
    args: argparse.Namespace, benchmarks: list[Benchmark]
) -> tuple[list[Outcome], dict[str, str]]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    client = docker.from_env()
    for stale in await asyncio.to_thread(sweep_stale, client):
        print(f"removed what a killed run left behind: {stale}", flush=True)
    print("building the agent image (cached layers: seconds)", flush=True)
    began = time.perf_counter()
    await asyncio.to_thread(build_agent_image, client, tag=DEFAULT_TAG, progress=lambda _: None)
    print(f"  image {DEFAULT_TAG} ready in {time.perf_counter() - began:.1f} s", flush=True)
    machine = machine_info(client)
    machine["baseline"] = (
        f"{BASELINE_COMMIT}, the code before the core rebuild (a scratch git worktree)"
    )
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=SCRATCH_PARENT))
    (root / PID_FILE).write_text(str(os.getpid()))
    log = (root / "orchestrator.log").open("w")
    clawpen_logging.configure("info", stream=log)
    ctx = BenchContext(
        quick=args.quick,
        root=root,
        docker=client,
        image=DEFAULT_TAG,
        api_key="sk-ant-bench-" + secrets.token_hex(16),
        log=log,
        profile=args.profile,
    )
    outcomes: list[Outcome] = []
    try:
        for bench in benchmarks:
            print(f"== {bench.name}: {bench.title}", flush=True)
            outcome = Outcome(bench)
            ctx.notes = []
            began = time.perf_counter()
            try:
                outcome.rows = await bench.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                outcome.error = f"{type(exc).__name__}: {exc}"
            finally:
                await asyncio.to_thread(ctx.cleanup)
            outcome.notes = ctx.notes
            outcome.seconds = time.perf_counter() - began
            for row in outcome.rows:
                print(summary(row), flush=True)
            print(f"  ({outcome.seconds:.1f} s)", flush=True)
            outcomes.append(outcome)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(ctx.close)
        log.close()
        if args.keep:
            print(f"scratch dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        client.close()
    return outcomes, machine


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    load()
    if args.list:
        for bench in REGISTRY.values():
            print(f"{bench.name:12} {bench.title}")
        return 0
    benchmarks = select(args.only, args.peer)
    if args.profile and not Path(sys.executable).with_name("py-spy").exists():
        raise SystemExit("--profile needs py-spy in the venv: .venv/bin/pip install py-spy")
    began = time.perf_counter()
    # uvloop, as the orchestrator runs: on the default selector loop, about one run in three
    # had a fake model's connection whose request sat unread in the kernel for good (the
    # selector no longer watched its reused descriptor), and an agent waited on it for ever
    outcomes, machine = uvloop.run(run_all(args, benchmarks))
    seconds = time.perf_counter() - began
    report: Path = args.report
    report.parent.mkdir(parents=True, exist_ok=True)
    plot = report.with_name(f"{report.stem}-latency.png")
    drawn = plot_latencies(outcomes, plot)
    command = "python -m bench" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    text = render(
        outcomes,
        machine,
        quick=args.quick,
        seconds=seconds,
        command=command,
        plot=plot if drawn else None,
    )
    report.write_text(text)
    print(f"wrote {report}" + (f" and {plot}" if drawn else "") + f" ({seconds:.0f} s in all)")
    missed = [r.name for o in outcomes for r in o.rows if r.passed is False]
    if missed:
        print("targets missed: " + "; ".join(missed))
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
