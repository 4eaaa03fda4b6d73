"""Agents in hardened Docker containers, through the Docker Engine API.

``container_spec`` is the whole security posture in one pure function; everything else here is
plumbing. The docker SDK is synchronous, so calls run in worker threads: this runtime's own
pool (``DOCKER_THREADS``), so that no other kind of blocking work can keep a container from
starting or stopping (``threads.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from clawpen_agent.protocol import AGENT_UID, EGRESS_PORT, SOCKET_DIR, SOCKET_PATH, WORKSPACE

from ..errors import DockerUnavailable, ImageMissing
from ..threads import run_in
from . import staging, workspace
from .base import AgentSpec, RuntimeEvent
from .image import build_hint
from .mounts import Mount, default_allowlist_path, grant

T = TypeVar("T")
LABEL_MANAGED = "clawpen.managed"
LABEL_INSTANCE = "clawpen.instance"
LABEL_AGENT = "clawpen.agent"
DOCKER_THREADS = 8  # calls wait on dockerd, not on the CPU: starts of several agents overlap


def container_name(instance: str, agent_id: str) -> str:
    return f"clawpen-{instance}-{agent_id}"


def volume_name(instance: str, agent_id: str) -> str:
    return f"clawpen-{instance}-{agent_id}-workspace"


def container_spec(
    spec: AgentSpec, workspace_dir: Path | None = None, mounts: Sequence[Mount] = ()
) -> dict[str, Any]:
    """Arguments for ``containers.create``: no network, no privileges, one host dir.

    ``workspace_dir``: the host mount of the agent's size-limited workspace image (mounted
    nosuid,nodev, which the bind keeps); without one, a Docker volume. ``mounts``: extra host
    folders the allowlist granted, under /mnt."""
    uid = f"{AGENT_UID}"
    environment = {
        "CLAWPEN_SOCKET": SOCKET_PATH,
        "CLAWPEN_AGENT_ID": spec.agent_id,
        "CLAWPEN_LANES": str(spec.lanes),
    }
    if spec.egress:  # still no network: the forwarder on loopback relays to the egress socket
        environment.update(egress_environment())
    workspace_source = (
        str(workspace_dir) if workspace_dir else volume_name(spec.instance, spec.agent_id)
    )
    volumes: dict[str, dict[str, str]] = {
        workspace_source: {"bind": WORKSPACE, "mode": "rw"},
        str(spec.socket_dir): {"bind": SOCKET_DIR, "mode": "rw"},
    }
    for mount in mounts:
        volumes[str(mount.host)] = {
            "bind": mount.container,
            "mode": "ro" if mount.read_only else "rw",
        }
    return {
        "image": spec.image,
        "name": container_name(spec.instance, spec.agent_id),
        "user": f"{uid}:{uid}",
        "environment": environment,
        "labels": {
            LABEL_MANAGED: "true",
            LABEL_INSTANCE: spec.instance,
            LABEL_AGENT: spec.agent_id,
        },
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={spec.tmp_mb}m,uid={uid},gid={uid}"},
        "volumes": volumes,
        "runtime": spec.runtime,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "mem_limit": f"{spec.memory_mb}m",
        "memswap_limit": f"{spec.memory_mb}m",
        "nano_cpus": int(spec.cpus * 1e9),
        "pids_limit": spec.pids_limit,
        "ipc_mode": "private",
        "init": True,
        "detach": True,
    }


def egress_environment() -> dict[str, str]:
    """What tells the agent's tools (pip, git, urllib, curl) to use the loopback forwarder."""
    proxy = f"http://127.0.0.1:{EGRESS_PORT}"
    env = {
        "CLAWPEN_EGRESS": "1",
        "NO_PROXY": "localhost,127.0.0.1",
        "no_proxy": "localhost,127.0.0.1",
    }
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        env[name] = env[name.lower()] = proxy
    return env


def connect(base_url: str | None = None) -> docker.DockerClient:
    """A client that is known to answer, or a ``DockerUnavailable`` that says how to start one."""
    where = base_url or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=where, timeout=60) if base_url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {where} ({type(exc).__name__})",
            "start it: bash scripts/ensure-docker.sh (or `dockerd &`), or set docker_host",
        ) from None
    return client


class DockerRuntime:
    def __init__(
        self,
        client: docker.DockerClient,
        instance: str,
        data_dir: Path | None = None,
        allowlist: Path | None = None,
    ) -> None:
        self.client = client
        self.instance = instance
        self.data_dir = data_dir  # where workspace images live, to unmount adopted ones too
        self.allowlist = allowlist or default_allowlist_path(os.environ)
        self.data_dirs: dict[str, Path] = {}  # agent id -> the data dir its workspace is in
        self.threads = ThreadPoolExecutor(DOCKER_THREADS, thread_name_prefix="clawpen-docker")

    def check_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ImageMissing(f"the agent image {image} is not built", build_hint(image)) from None
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine error: {exc}", "check dockerd's log") from None

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking SDK call in this runtime's threads; an engine that went away becomes an
        error that says so (and that the agent's worker retries), not a traceback."""
        try:
            return await run_in(self.threads, function, *args)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailable(
                f"the Docker engine failed ({type(exc).__name__}: {exc})",
                "check that dockerd runs (bash scripts/ensure-docker.sh) and its log",
            ) from None

    async def start(self, spec: AgentSpec) -> str:
        return await self._call(self._start, spec)

    def _start(self, spec: AgentSpec) -> str:
        name = container_name(spec.instance, spec.agent_id)
        try:
            existing = self.client.containers.get(name)
        except docker.errors.NotFound:
            existing = None
        if existing is not None:
            if existing.status == "paused":  # frozen by us (or by an orchestrator before us)
                existing.unpause()
                return str(existing.id)
            if existing.status == "running":
                return str(existing.id)  # adopt it: never a second container for one agent
            existing.remove(force=True)
        mounts = [
            Mount(
                staging.prepare(
                    granted.host,
                    staging.staging_dir(spec.data_dir, spec.agent_id, granted.container),
                    AGENT_UID,
                ),
                granted.container,
                read_only=False,
            )
            if request.staged
            else granted
            for request, granted in zip(
                spec.mounts, grant(spec.mounts, self.allowlist, spec.data_dir), strict=True
            )
        ]
        workspace_dir = None
        if spec.workspace_mb:
            workspace_dir = workspace.prepare(
                spec.data_dir, spec.agent_id, spec.workspace_mb, AGENT_UID
            )
            self.data_dirs[spec.agent_id] = spec.data_dir
        else:
            self._ensure_volume(spec)
        try:
            container = self.client.containers.create(**container_spec(spec, workspace_dir, mounts))
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"the agent image {spec.image} is not built",
                build_hint(spec.image),
            ) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # created concurrently by someone else: adopt theirs
                return str(self.client.containers.get(name).id)
            raise
        container.start()
        return str(container.id)

    def _ensure_volume(self, spec: AgentSpec) -> None:
        name = volume_name(spec.instance, spec.agent_id)
        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            labels = {
                LABEL_MANAGED: "true",
                LABEL_INSTANCE: spec.instance,
                LABEL_AGENT: spec.agent_id,
            }
            self.client.volumes.create(name, labels=labels)

    async def stop(self, agent_id: str) -> None:
        await self._call(self._stop, agent_id)

    def _stop(self, agent_id: str) -> None:
        try:
            container = self.client.containers.get(container_name(self.instance, agent_id))
        except docker.errors.NotFound:
            return
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
        data_dir = self.data_dirs.get(agent_id, self.data_dir)
        if data_dir is not None:
            workspace.release(data_dir, agent_id)

    async def pause(self, agent_id: str) -> None:
        await self._call(self.client.api.pause, container_name(self.instance, agent_id))

    async def unpause(self, agent_id: str) -> None:
        """By name, in one API call (no lookup first: a wake-up costs the thaw only)."""
        await self._call(self.client.api.unpause, container_name(self.instance, agent_id))

    async def reset_workspace(self, agent_id: str) -> None:
        """Delete the agent's workspace, whichever kind it has (its container is stopped
        first): the size-limited image and the Docker volume. The next start makes an empty
        one."""
        await self._call(self._reset_workspace, agent_id)

    def _reset_workspace(self, agent_id: str) -> None:
        self._stop(agent_id)
        data_dir = self.data_dirs.get(agent_id, self.data_dir)
        if data_dir is not None:
            workspace.remove(data_dir, agent_id)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.volumes.get(volume_name(self.instance, agent_id)).remove(force=True)

    async def running(self) -> dict[str, str]:
        return await self._call(self._running)

    def _running(self) -> dict[str, str]:
        """Running and paused containers: a paused one (frozen by an orchestrator before this
        one) is thawed, so that its agent reconnects to this orchestrator's socket and is
        adopted like a running one; the pool freezes it again once it has been idle."""
        label = f"{LABEL_INSTANCE}={self.instance}"
        running = self.client.containers.list(filters={"label": [label], "status": "running"})
        paused = self.client.containers.list(filters={"label": [label], "status": "paused"})
        for container in paused:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.unpause()
                running.append(container)
        return {c.labels[LABEL_AGENT]: str(c.id) for c in running}

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """Docker's event stream, filtered to this instance's containers; read in a thread."""
        filters = {
            "type": "container",
            "label": f"{LABEL_INSTANCE}={self.instance}",
            "event": ["die", "oom"],
        }
        events = functools.partial(self.client.events, decode=True, filters=filters)
        stream = await run_in(self.threads, events)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def pump() -> None:
            with contextlib.suppress(Exception):  # closed under us, or dockerd went away
                for event in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=pump, name="docker-events", daemon=True).start()
        try:
            while (event := await queue.get()) is not None:
                attributes = event.get("Actor", {}).get("Attributes", {})
                action = event.get("Action") or event.get("status", "")
                agent_id = attributes.get(LABEL_AGENT, "")
                if action == "oom":
                    yield RuntimeEvent("oom", agent_id, event.get("id", ""), "out of memory")
                elif action == "die":
                    detail = f"exit code {attributes.get('exitCode', '?')}"
                    yield RuntimeEvent("exit", agent_id, event.get("id", ""), detail)
        finally:
            stream.close()

    async def close(self) -> None:
        await run_in(self.threads, self.client.close)
        self.threads.shutdown(wait=False)
