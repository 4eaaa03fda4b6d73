"""Start-up wiring: builds every object and owns the one task group everything runs in."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from .admin import ADMIN_SOCKET, AdminServer
from .agents import AgentPool, instance_id
from .channels.base import Channel
from .channels.cli import CliChannel
from .channels.telegram import TelegramChannel
from .config import Settings
from .dispatch import Dispatcher
from .errors import ClawpenError, StoreError
from .logging import get_logger
from .metrics import Metrics
from .outbox import Outbox
from .proxy import ModelProxy
from .runtime.base import AgentRuntime
from .store import Store


def docker_runtime(settings: Settings) -> AgentRuntime:
    from .runtime.docker import DockerRuntime, connect

    runtime = DockerRuntime(connect(settings.docker_host), instance_id(settings.data_dir))
    runtime.check_image(settings.image)
    return runtime


class Orchestrator:
    """One process: channels, store, agents, proxy. ``run`` returns when cancelled."""

    def __init__(
        self,
        settings: Settings,
        runtime: AgentRuntime | None = None,
        upstream: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.log = get_logger()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        self._lock = hold_lock(settings.data_dir / "clawpen.lock")
        self.metrics = Metrics()
        self.store = Store(settings.data_dir / "clawpen.db")
        self.runtime = runtime if runtime is not None else docker_runtime(settings)
        # No pool-wide cap: each agent's max_model_calls bounds the connections, so that one
        # agent's slow calls cannot make another's wait for a connection.
        self.upstream = upstream or httpx.AsyncClient(
            timeout=httpx.Timeout(600, connect=10), limits=httpx.Limits(max_connections=None)
        )
        self.proxy = ModelProxy(
            self.upstream,
            settings.model.base_url,
            settings.model.api_key,
            self._record_usage,
            self._admit,
            calls_allowed=lambda agent_id: settings.agent(agent_id).max_model_calls,
        )
        self.cli = CliChannel() if settings.channels.cli is not None else None
        channels: list[Channel] = [self.cli] if self.cli else []
        if settings.channels.telegram is not None:
            channels.append(TelegramChannel(settings.channels.telegram))
        self.channels = {c.name: c for c in channels}
        self.pool = AgentPool(settings, self.runtime, self.proxy, self.store, self.metrics)
        self.outbox = Outbox(self.store, self.channels, self.metrics)
        self.dispatcher = Dispatcher(settings, self.store, self.pool, self.outbox, self.metrics)
        self.admin = AdminServer(
            settings.data_dir / ADMIN_SOCKET,
            self.cli,
            self.dispatcher,
            self.metrics,
            self.status,
            settings.metrics_port,
        )
        self.ready = asyncio.Event()

    async def _record_usage(
        self, agent_id: str, model: str, input_tokens: int, output_tokens: int
    ) -> None:
        try:
            self.store.record_usage(agent_id, model, input_tokens, output_tokens)
        except StoreError as exc:  # the call happened; losing its accounting must not fail it
            self.log.error("store_unwritable", what="usage", error=str(exc))
        self.metrics.tokens.labels(agent_id, "input").inc(input_tokens)
        self.metrics.tokens.labels(agent_id, "output").inc(output_tokens)

    async def _admit(self, agent_id: str, model: str) -> str | None:
        """Policy for one model call: the agent's own model only, within its daily budget.
        A compromised agent must not pick a pricier model or spend without end."""
        allowed = self.settings.agent(agent_id).model or self.settings.model.name
        if model != allowed:
            return f"agent {agent_id} may use model {allowed} only, not {model!r}"
        limit = self.settings.model.daily_token_budget
        if limit is None:
            return None
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        used = self.store.tokens_used_since(agent_id, midnight.timestamp())
        if used < limit:
            return None
        return (
            f"agent {agent_id} has used {used} of its {limit} model tokens for today (UTC);"
            " raise model.daily_token_budget or wait for tomorrow"
        )

    def status(self) -> dict[str, Any]:
        return {
            "agents": {
                a: {"container": self.pool.containers.get(a), "connected": s.connected}
                for a, s in self.pool.sessions.items()
            },
            "channels": sorted(self.channels),
            "counts": self.store.counts(),
        }

    async def run(self) -> None:
        try:
            await self.pool.open()
            await self.admin.start()
            self.log.info(
                "orchestrator_started",
                agents=sorted(self.pool.sessions),
                channels=sorted(self.channels),
                dataDir=str(self.settings.data_dir),
            )
            async with asyncio.TaskGroup() as group:
                for channel in self.channels.values():
                    group.create_task(channel.run(self.dispatcher.accept), name=channel.name)
                for name in self.channels:
                    group.create_task(self.outbox.run(name), name=f"outbox-{name}")
                group.create_task(self.pool.watch(), name="container-events")
                for agent_id in self.pool.sessions:
                    group.create_task(self.dispatcher.run_agent(agent_id), name=agent_id)
                self.ready.set()
        except* ClawpenError as failed:  # e.g. a refused bot token: one line, not a traceback
            self.log.error("orchestrator_failed", error=str(failed.exceptions[0]))
            raise failed.exceptions[0] from None
        finally:
            await self.close()

    async def close(self) -> None:
        await self.admin.close()
        await self.pool.close()
        await self.upstream.aclose()
        await self.runtime.close()
        self.store.close()
        os.close(self._lock)
        self.log.info("orchestrator_stopped")


def hold_lock(path: Path) -> int:
    """One orchestrator per data_dir: two would both poll Telegram and answer every message
    twice. The kernel drops the lock when the process dies, however it dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise ClawpenError(
            f"another orchestrator (pid {holder}) is running with data_dir {path.parent}",
            "stop it first, or give this one its own data_dir",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def run_until_signal(orchestrator: Orchestrator) -> None:
    """Run in the foreground; SIGINT and SIGTERM stop it cleanly."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def cancel() -> None:
            if not task.cancelling():  # a second signal must not cut the clean shutdown short
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await orchestrator.run()

    asyncio.run(main())
