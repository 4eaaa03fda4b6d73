"""Orchestrators as child processes: ``python -m clawpen run`` of this tree or of the baseline
(``trees.py``), or ``bench.orchestrator_proc`` for this tree with in-process agents.

Each runs under ``bench.guard`` (which stops it if the bench dies), with its JSON log in a file
next to its config. Nothing is patched into it: what we know of it comes from its log, its
store, its admin socket, /proc and the fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from clawpen.runtime.pool import instance_id

from .fakes import write_config
from .harness import BenchContext
from .inprocess import RuntimeKind
from .looplag import Readings, read_lag
from .trees import REPO_ROOT, Tree


class OrchestratorProcess:
    def __init__(
        self, tree: Tree, config_path: Path, env: dict[str, str], runtime: RuntimeKind = "docker"
    ):
        if runtime != "docker" and tree.baseline:
            raise ValueError("the baseline runs with its own (Docker) runtime only")
        self.tree = tree
        self.config = config_path
        self.data_dir = config_path.parent
        self.env = {**os.environ, **env, **tree.environment()}
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
                cwd=REPO_ROOT,  # for bench.guard; clawpen itself comes from PYTHONPATH
            )
        async with asyncio.timeout(timeout):
            while not self.events("orchestrator_started") or not self.pid:
                with contextlib.suppress(OSError, ValueError):
                    self.pid = int(self.pid_file.read_text())
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"the orchestrator ({self.tree.label}) exited with"
                        f" {self.process.returncode}: {self.errors.read_text()[-2000:]}"
                        f" {self.log.read_text()[-2000:]}"
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

    async def lag(self) -> Readings | None:
        """Its loop-lag histogram (None for the baseline, which has no probe)."""
        if self.tree.baseline:
            return None
        return await read_lag(self.data_dir)

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
    ctx: BenchContext, tree: Tree, raw: dict[str, Any], runtime: RuntimeKind = "docker"
) -> AsyncIterator[OrchestratorProcess]:
    """``raw`` is a config for this tree (``fakes.config``); the baseline gets its own form."""
    data_dir = Path(raw["data_dir"])
    ctx.track(instance_id(data_dir))
    env = write_config(data_dir / "clawpen.yaml", tree.adapt(raw))
    process = OrchestratorProcess(tree, data_dir / "clawpen.yaml", env, runtime)
    try:
        await process.start()
        yield process
    finally:
        await process.stop()
