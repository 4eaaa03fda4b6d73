"""The floors the orchestrator's figures are judged against, measured in the same run: a bare
SQLite commit configured as the store's (the price of every durable step) and a bare
``docker run`` of the agent image (the price of every cold start)."""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from clawpen.runtime.base import AgentSpec
from clawpen.runtime.docker import LABEL_INSTANCE, LABEL_MANAGED, container_spec

from .harness import BenchContext


def commit_latencies(directory: Path, count: int) -> list[float]:
    """Seconds per SQLite commit of one small row, configured as the store is (WAL,
    synchronous=FULL), on the disk under ``directory``."""
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


def docker_runs(ctx: BenchContext, count: int, hardened: bool) -> list[tuple[float, float, float]]:
    """(create, start, wait) seconds of ``python3 -c pass`` in the agent image, per run: bare
    (no network), or with the agent's whole hardened ``container_spec``."""
    instance = f"bench{secrets.token_hex(4)}"
    ctx.track(instance)
    labels = {LABEL_MANAGED: "true", LABEL_INSTANCE: instance, "clawpen.agent": "floor"}
    args: dict[str, Any]
    if hardened:
        spec = AgentSpec("floor", instance, ctx.image, Path(ctx.data_dir("floor")))
        args = container_spec(spec)
        for volume in args["volumes"]:
            if not volume.startswith("/"):  # the named workspace volume, made as the runtime does
                ctx.docker.volumes.create(volume, labels=labels)
    else:
        args = {"image": ctx.image, "network_mode": "none", "labels": labels}
    args["entrypoint"] = ["python3", "-c", "pass"]
    samples = []
    for i in range(count + 1):  # the first one warms the caches and is not counted
        args["name"] = f"clawpen-{instance}-floor-{i}"
        began = time.perf_counter()
        container = ctx.docker.containers.create(**args)
        created = time.perf_counter()
        container.start()
        started = time.perf_counter()
        status = container.wait()
        ended = time.perf_counter()
        container.remove(force=True)
        if status.get("StatusCode") != 0:
            raise RuntimeError(f"the floor container exited with {status}")
        if i:
            samples.append((created - began, started - created, ended - started))
    return samples
