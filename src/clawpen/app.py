"""Start-up wiring: builds every object and owns the one task group everything runs in."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

import aiohttp
import uvloop

from clawpen_agent.protocol import EGRESS_SOCKET_NAME

from . import netenv
from .channels.base import Channel, ChannelFatal, RateLimitSettings
from .channels.cli import CliChannel, CliSettings
from .channels.process import ChannelProcess, Zygote
from .channels.registry import plugins
from .config import Settings
from .core.approvals import Approvals
from .core.board import Board, Leases
from .core.intake import ChannelInbox, Intake
from .core.outbox import Outbox
from .core.scheduler import Clock, Scheduler
from .core.usage import UsageRecorder
from .core.voice import Transcriber
from .core.worker import Worker
from .door.budget import Budget, Limits
from .door.caps import DoorLimits
from .door.modelrequest import CLAUDE_CODE_BETAS, CLAUDE_CODE_FIELDS, AgentPolicy
from .door.proxy import ModelProxy
from .door.server import AgentTools
from .egress.netpolicy import LoopbackExceptions
from .egress.proxy import EgressProxy
from .egress.webfetch import WebFetcher
from .errors import ClawpenError, StoreError
from .models import ChannelState
from .obs.logging import get_logger
from .obs.metrics import Metrics
from .obs.tracing import NO_TRACING, Tracing, otlp_provider
from .ops.admin import ADMIN_SOCKET, AdminServer
from .ops.dashboard import Dashboard
from .ops.dashview import DashboardView
from .ops.disk import DiskGuard
from .ports.limits import files_short, raise_open_files_limit
from .prepare import Prepared, prepare
from .retry import RESTART, Retrier
from .runtime.base import AgentRuntime
from .runtime.pool import AgentPool
from .schedule import describe_job
from .security.vault import Vault
from .store import Store
from .tools.files import AgentFiles
from .tools.jobs import AgentJobs
from .tools.mcp import AgentMcp
from .tools.send import AgentMessages
from .tools.web import AgentWeb

HOUSEKEEPING_SECONDS = 15.0
STRANGERS_KEPT_SECONDS = 7 * 86400

AdapterMode = Literal["process", "in_process"]
_UNLIMITED = RateLimitSettings(per_chat=0, overall=0)


def build_channel(
    name: str, settings: Any, mode: AdapterMode, log_level: str, zygote: Zygote | None = None
) -> Channel:
    """A platform's adapter in a process of its own (forked by ``zygote`` when given), or (the
    CLI, and tests that ask for it) in this one."""
    plugin = plugins()[name]
    if plugin.in_process or mode == "in_process":
        return plugin.adapter(settings)
    return ChannelProcess(name, settings, plugin.max_message_length, log_level, zygote)


def _channels(
    settings: Settings, given: Mapping[str, Channel], mode: AdapterMode, zygote: Zygote
) -> dict[str, Channel]:
    """The adapters given (tests), and one built for every other configured platform."""
    built = dict(given)
    for name, channel_settings in settings.channel_settings().items():
        if isinstance(channel_settings, CliSettings) and name not in built:
            # the files it is sent land in data_dir, for `clawpen chat` to name
            built[name] = CliChannel(channel_settings, settings.data_dir / "files" / "cli")
        elif name not in built:
            built[name] = build_channel(name, channel_settings, mode, settings.log_level, zygote)
    return built


def _limits(settings: Settings, channels: Mapping[str, Channel]) -> dict[str, RateLimitSettings]:
    """Each channel's sending limits (a given adapter that is not configured has none)."""
    configured = settings.channel_settings()
    return {
        name: plugins()[name].limits(configured[name]) if name in configured else _UNLIMITED
        for name in channels
    }


def _file_limits(channels: Mapping[str, Channel]) -> dict[str, int]:
    """Each channel's upload limit for one file (its plug-in's ``max_file_bytes``)."""
    installed = plugins()
    return {name: installed[name].max_file_bytes for name in channels if name in installed}


def agent_policy(settings: Settings, agent_id: str) -> AgentPolicy:
    """What an agent may send upstream: a compromised agent must not pick a pricier model,
    ask for endless output, or have the provider reach the network for it."""
    agent = settings.agent(agent_id)
    claude_code = agent.engine == "claude-code"
    engine_betas = CLAUDE_CODE_BETAS if claude_code else frozenset()
    return AgentPolicy(
        models=tuple(agent.models or [agent.model or settings.model.name]),
        max_tokens=agent.max_tokens or settings.model.max_tokens,
        server_tools=frozenset(agent.server_tools),
        beta_headers=frozenset(agent.beta_headers) | engine_betas,
        extra_fields=CLAUDE_CODE_FIELDS if claude_code else frozenset(),
    )


def agent_limits(settings: Settings, agent_id: str, model: str) -> Limits:
    """An agent's daily budget and the model's prices (``door/budget.py``)."""
    agent, defaults = settings.agent(agent_id), settings.model
    price = defaults.prices.get(model)
    return Limits(
        tokens=agent.daily_token_budget or defaults.daily_token_budget,
        usd=agent.daily_usd_budget or defaults.daily_usd_budget,
        price_in=price.input if price else 0.0,
        price_out=price.output if price else 0.0,
    )


class Orchestrator:
    """One process: channels, store, agents, proxy. ``run`` returns when cancelled.

    ``__init__`` first opens what lives on disk and in Docker (``prepare``), then builds each
    object from the ones above it: everything an object needs arrives in its constructor, and
    nothing is set on it afterwards. Where two parts need each other, one is given a narrow
    view of the other (the tools get ``tools.api``'s protocols; intake and workers share a
    ``Board``; the scheduler gets the board's ``wake``)."""

    @classmethod
    def open(
        cls,
        settings: Settings,
        runtime: AgentRuntime | None = None,
        store: Store | None = None,
        vault: Vault | None = None,
        **parts: Any,
    ) -> Orchestrator:
        """``prepare`` (the data dir, its lock, the database, the runtime, the vault: the one
        I/O before anything is built), then the orchestrator built on what it opened. The
        given ``runtime``, ``store`` and ``vault`` (tests) are used as they are."""
        return cls(settings, prepare(settings, store, runtime, vault), **parts)

    def __init__(
        self,
        settings: Settings,
        prepared: Prepared,
        upstream: aiohttp.ClientSession | None = None,
        channels: Mapping[str, Channel] | None = None,
        adapters: AdapterMode = "process",
        clock: Clock | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """Wiring only: each part built from those above it, in dependency order; no I/O."""
        self.settings = settings
        self.log = get_logger()
        self._lock = prepared.lock
        self.store = prepared.store
        self.runtime = prepared.runtime
        self.vault = prepared.vault
        self.http_token = prepared.http_token  # the dashboard's and the metrics port's
        self.metrics = Metrics()
        self.tracing = _tracing(settings, tracer_provider)
        self.disk = DiskGuard(settings.data_dir, settings.disk_reserve_mb)
        self.leases = Leases(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        self.board = Board(a.id for a in settings.agents)
        # No pool-wide cap: each agent's max_model_calls bounds the connections, so that one
        # agent's slow calls cannot make another's wait for a connection.
        self.upstream = upstream
        self.upstreams: dict[str, aiohttp.ClientSession] = {}
        key_name = settings.secret_name("model.api_key")
        self.proxy = ModelProxy(
            upstream or self._upstream_for,
            settings.model.base_url,
            # secret:NAME is read through the vault at each call, so a rotated key needs no
            # restart (the file backend reads again only when the file changed)
            self.vault.ref(key_name, "proxy") if key_name else settings.model.api_key,
            UsageRecorder(self.store, self.metrics, self.board.notice, self.leases.clock),
            partial(agent_policy, settings),
            Budget(partial(agent_limits, settings), self.store.spent_since),
            calls_allowed=lambda agent_id: settings.agent(agent_id).max_model_calls,
            tracing=self.tracing,
        )
        # one fresh process that forks the adapters: their common libraries loaded once
        self.zygote = Zygote(settings.log_level)
        self.channels = _channels(settings, channels or {}, adapters, self.zygote)
        cli = self.channels.get("cli")
        self.cli = cli if isinstance(cli, CliChannel) else None
        self.channel_states = {name: ChannelState(name, "starting") for name in self.channels}
        self.outbox = Outbox(
            self.store,
            self.channels,
            _limits(settings, self.channels),
            self.metrics,
            self.leases.lease,
            tracing=self.tracing,
        )
        self.scheduler = Scheduler(
            settings,
            self.store,
            self.board.wake,
            clock,
            lateness=self.metrics.job_lateness.observe,
        )
        self.approvals = Approvals(
            settings, self.store, self.outbox, self.channels, self.board, self.leases
        )
        self.intake = Intake(
            settings,
            self.store,
            self.outbox,
            self.metrics,
            self.leases,
            self.board,
            admit=self.disk.admit,
            tracing=self.tracing,
            approvals=self.approvals,
        )
        exceptions = LoopbackExceptions.parse(settings.allow_loopback_for_tests)
        tools = AgentTools(
            jobs=AgentJobs(self.scheduler, self.intake, gate=self.approvals),
            messages=AgentMessages(self.intake, gate=self.approvals),
            web=AgentWeb(settings, WebFetcher(exceptions), gate=self.approvals),
            files=AgentFiles(self.intake, _file_limits(self.channels)),
            mcp=AgentMcp(settings, gate=self.approvals),
        )
        self.pool = AgentPool(
            settings, self.runtime, self.proxy, self.store, self.metrics, tools=tools
        )
        self.worker = Worker(
            settings,
            self.store,
            self.pool,
            self.outbox,
            self.metrics,
            self.leases,
            self.board,
            job_done=self.scheduler.wake,
            tracing=self.tracing,
            review_mounts=self.approvals.review_mounts,
            transcriber=Transcriber(settings.transcription) if settings.transcription else None,
        )
        self.egress = [
            EgressProxy(
                a.id,
                self.pool.specs[a.id].socket_dir / EGRESS_SOCKET_NAME,
                a.egress.allow,
                exceptions,
                ask=partial(self.approvals.ask_egress, a.id)
                if "egress" in a.approvals.ask
                else None,
            )
            for a in settings.agents
            if a.egress.allow or "egress" in a.approvals.ask
        ]
        self.ready = asyncio.Event()
        self.dashboard = (
            None
            if settings.dashboard is None
            else Dashboard(
                settings.dashboard,
                self.http_token,
                DashboardView(
                    self.store,
                    self.pool,
                    self.intake,
                    self.board.running,
                    self.scheduler,
                    lambda: self.channel_states,
                ),
            )
        )
        self.admin = AdminServer(
            settings.data_dir / ADMIN_SOCKET,
            self.cli,
            self.intake,
            self.pool,
            self.metrics,
            self.status,
            settings.metrics_port,
            settings.metrics_port_limits,
            self.scheduler,
            token=self.http_token,
            readiness=self.readiness,
            dashboard=self.dashboard.describe if self.dashboard is not None else None,
        )

    def _upstream_for(self, agent_id: str) -> aiohttp.ClientSession:
        """The agent's own connections to the model API, as many as its calls in flight."""
        session = self.upstreams.get(agent_id)
        if session is None:
            calls = self.settings.agent(agent_id).max_model_calls
            # through HTTPS_PROXY (unless NO_PROXY) and the CA bundle, as the adapters connect
            net = netenv.current()
            session = self.upstreams[agent_id] = aiohttp.ClientSession(
                connector=net.connector(limit=calls),
                proxy=net.proxy_for(self.settings.model.base_url),
            )
        return session

    async def status(self) -> dict[str, Any]:
        now = time.time()
        undelivered = await self.store.delivery_failures(now - 86_400)
        return {
            "agents": {
                a: {
                    "container": self.pool.containers.get(a),
                    "connected": s.connected,
                    "paused": a in self.pool.paused,
                }
                for a, s in self.pool.sessions.items()
            },
            "channels": {
                name: {
                    "state": state.state,
                    **({"error": state.error} if state.error else {}),
                    **({"restarts": state.restarts} if state.restarts else {}),
                    **({"pid": pid} if (pid := getattr(self.channels[name], "pid", None)) else {}),
                    "sending": self.outbox.circuits[name].describe(now),
                    **_undelivered(undelivered.get(name)),
                }
                for name, state in sorted(self.channel_states.items())
            },
            "counts": await self.store.counts(),
            "vault": self._vault_status(),
            **await self._operations_status(now),
        }

    async def _operations_status(self, now: float) -> dict[str, Any]:
        """What an operator reads first: jobs, today's spend per agent, the disk."""
        midnight = now - now % 86_400
        spend: dict[str, float] = {}
        for row in await self.store.usage_by_day(midnight):
            spend[row.agent_id] = round(spend.get(row.agent_id, 0.0) + row.usd, 6)
        jobs = [
            {k: describe_job(job)[k] for k in ("name", "agent", "state", "next_run", "last_result")}
            for job in await self.scheduler.jobs()
        ]
        return {"jobs": jobs, "spend_today_usd": spend, "disk": self.disk.describe()}

    async def readiness(self) -> list[str]:
        """What keeps this orchestrator from doing its work now (empty: ready)."""
        if not self.ready.is_set():
            return ["starting"]
        try:
            async with asyncio.timeout(2):
                await self.store.counts()
        except (StoreError, TimeoutError) as exc:
            return [f"the store does not answer ({exc or 'timeout'})"]
        return []

    def _vault_status(self) -> dict[str, Any]:
        try:
            return self.vault.describe()
        except ClawpenError as exc:
            return {**self.vault.backend.describe(), "error": str(exc)}

    async def run(self) -> None:
        try:
            # We hold the data_dir's lock, so whoever claimed work before us is dead: take it
            # over now instead of waiting for the leases to run out.
            await self.store.release_leases()
            await self.intake.open()
            await self.scheduler.open()
            for proxy in self.egress:  # before any container starts: its forwarder needs it
                await proxy.start()
            await self.pool.open()
            await self.admin.start()
            if self.dashboard is not None:
                await self.dashboard.start()
            self.log.info(
                "orchestrator_started",
                agents=sorted(self.pool.sessions),
                channels=sorted(self.channels),
                dataDir=str(self.settings.data_dir),
            )
            gc.freeze()  # what start-up built lives for ever: later collections skip it
            # The store's threads (and Docker's) take the GIL in short turns; the loop must not
            # wait the default 5 ms for it when one of them holds it.
            sys.setswitchinterval(0.001)
            async with asyncio.TaskGroup() as group:
                for name, channel in self.channels.items():
                    group.create_task(self._run_channel(name, channel), name=name)
                    group.create_task(self.outbox.run(name), name=f"outbox-{name}")
                group.create_task(self.pool.watch(), name="container-events")
                group.create_task(self._housekeeping(), name="housekeeping")
                group.create_task(self.metrics.watch_event_loop(), name="loop-lag")
                group.create_task(self.scheduler.run(), name="scheduler")
                for agent_id in self.pool.sessions:
                    group.create_task(self.worker.run_agent(agent_id), name=agent_id)
                self.ready.set()
        except* ClawpenError as failed:  # one line, not a traceback
            self.log.error("orchestrator_failed", error=str(failed.exceptions[0]))
            raise failed.exceptions[0] from None
        finally:
            await self.close()

    async def _run_channel(self, name: str, channel: Channel) -> None:
        """Run a channel for as long as the orchestrator runs: restarted with backoff when it
        fails, disabled (the others go on) when it cannot work at all."""
        retrier = Retrier(RESTART)
        while True:
            self._set_channel(name, "running")
            try:
                await channel.run(ChannelInbox(self.intake, name, partial(self._reach, name)))
                error = "stopped on its own"
            except ChannelFatal as exc:
                self._set_channel(name, "disabled", str(exc))
                self.log.error("channel_disabled", channel=name, error=str(exc))
                await asyncio.Event().wait()  # until shutdown; fix the config and restart
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.log.exception("channel_crashed", channel=name)
            delay = retrier.next_delay()
            state = self.channel_states[name]
            self._set_channel(name, "restarting", error, state.restarts + 1)
            self.log.warning("channel_restarting", channel=name, error=error, retryIn=delay)
            await asyncio.sleep(delay)

    def _reach(self, name: str, state: str, error: str) -> None:
        """The adapter's word on its platform (``channels/reach.py``): ``unreachable`` with
        the cause and the next try, or ``running`` again; a disabled channel stays so."""
        if self.channel_states[name].state in ("running", "unreachable"):
            self._set_channel(name, state, error)

    def _set_channel(self, name: str, state: str, error: str = "", restarts: int = -1) -> None:
        old = self.channel_states[name]
        self.channel_states[name] = ChannelState(
            name, state, error, old.restarts if restarts < 0 else restarts
        )
        self.metrics.channel_up.labels(name).set(1 if state == "running" else 0)

    async def _housekeeping(self) -> None:
        """Renew this orchestrator's leases on its work, and forget old strangers."""
        expired_at = 0.0
        while True:
            now = self.leases.clock()
            self.disk.check()  # warnings as free space falls, even with no message arriving
            try:
                await self.store.renew_leases(self.leases.lease(now))
                if now - expired_at > 3600:
                    await self.store.expire_strangers(now - STRANGERS_KEPT_SECONDS)
                    expired_at = now
            except StoreError as exc:
                self.log.error("store_unwritable", what="housekeeping", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def close(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.close()
        await self.admin.close()
        await self.pool.close()
        await self.zygote.close()
        for proxy in self.egress:
            await proxy.close()
        for session in [self.upstream, *self.upstreams.values()]:
            if session is not None:
                await session.close()
        await self.runtime.close()
        await self.store.close()
        os.close(self._lock)
        self.log.info("orchestrator_stopped")


def _tracing(settings: Settings, provider: Any) -> Tracing:
    """Traces when ``tracing:`` asks for them; the provider is the test's, or one exporting
    over OTLP when that exporter is installed and configured (``OTEL_EXPORTER_OTLP_*``), or
    whatever the process set up globally."""
    if settings.tracing is None or not settings.tracing.enabled:
        return NO_TRACING
    if provider is None:
        provider = otlp_provider(settings.tracing.service_name)
    return Tracing(provider)


def check_open_files(settings: Settings, limit: int) -> None:
    """Warn at start when the open-files limit is below what the caps could take together:
    then a flood could still starve the agents, and the fix is the limit, not the caps."""
    public = settings.metrics_port_limits.max_connections if settings.metrics_port else 0
    if settings.dashboard is not None:
        public += settings.dashboard.port_limits.max_connections
    per_agent = DoorLimits().max_connections
    short = files_short(limit, public, len(settings.agents), per_agent)
    if short:
        get_logger().warning(
            "open_files_limit_low",
            limit=limit,
            needed=limit + short,
            fix="raise the hard limit (LimitNOFILE= in the systemd unit, or ulimit -Hn)",
        )


def run_until_signal(orchestrator: Orchestrator) -> None:
    """Run in the foreground; SIGINT and SIGTERM stop it cleanly. The open files limit is
    raised first: the public ports' caps leave the rest of it to the agents (``listener``)."""
    check_open_files(orchestrator.settings, raise_open_files_limit())

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

    uvloop.run(main())  # libuv's loop: the same asyncio, a good deal less CPU per message


def _undelivered(failures: tuple[int, str] | None) -> dict[str, Any]:
    """Replies given up or failed by the platform in the last day, for ``clawpen status``."""
    if failures is None:
        return {}
    count, error = failures
    return {"undelivered_24h": count, "last_undelivered": error}
