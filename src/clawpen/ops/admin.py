"""The admin socket: how the `clawpen` CLI talks to a running orchestrator.

A Unix socket with owner-only permissions: being able to connect is the authorization.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..channels.cli import CliChannel
from ..core.approvals import Approvals, describe_approval
from ..core.intake import Intake
from ..core.scheduler import Scheduler, job_ref
from ..errors import ClawpenError, StoreError
from ..models import Address
from ..obs.metrics import Metrics
from ..ports.limits import PortLimits
from ..ports.listener import Listener
from ..ports.safejson import read_object
from ..runtime.pool import AgentPool
from ..schedule import ScheduleError, describe_job, describe_run, make_spec
from ..security.webauth import credential

ADMIN_SOCKET = "admin.sock"


class AdminServer:
    def __init__(
        self,
        path: Path,
        cli: CliChannel | None,
        intake: Intake,
        pool: AgentPool,
        metrics: Metrics,
        status: Callable[[], Awaitable[dict[str, Any]]],
        metrics_port: int | None = None,
        metrics_port_limits: PortLimits | None = None,
        scheduler: Scheduler | None = None,
        token: str = "",
        readiness: Callable[[], Awaitable[list[str]]] | None = None,
        dashboard: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.token = token  # for the metrics port; the admin socket's permissions are its own
        self.readiness = readiness
        self.dashboard = dashboard
        self.path = path
        self.metrics_port = metrics_port
        self.metrics_port_limits = metrics_port_limits or PortLimits(max_connections=16)
        self.cli = cli
        self.intake = intake
        self.pool = pool
        self.metrics = metrics
        self.status = status
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat", self._chat)
        app.router.add_get("/v1/chat/unread", self._unread)
        app.router.add_post("/v1/chat/more", self._chat_more)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/pairings", self._pairings)
        app.router.add_post("/v1/pairings", self._pair)
        app.router.add_post("/v1/pairings/approve", self._approve)
        app.router.add_get("/v1/pairings/pending", self._pending)
        app.router.add_delete("/v1/pairings/{address}", self._unpair)
        app.router.add_get("/v1/jobs", self._jobs)
        app.router.add_post("/v1/jobs", self._add_job)
        app.router.add_delete("/v1/jobs/{name}", self._remove_job)
        app.router.add_post("/v1/jobs/{name}/{action}", self._job_action)
        app.router.add_get("/v1/jobs/{name}/runs", self._job_runs)
        app.router.add_get("/v1/approvals", self._approvals)
        app.router.add_post("/v1/approvals/{id}/{action}", self._decide_approval)
        app.router.add_get("/v1/approval-hosts", self._approval_hosts)
        app.router.add_delete("/v1/approval-hosts/{agent}/{host}", self._revoke_host)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/strangers", self._strangers)
        app.router.add_get("/v1/agents", self._agents)
        app.router.add_post("/v1/agents/{agent}/{action}", self._agent_action)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/dashboard", self._dashboard)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=2
        )
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # never world- or group-connectable, not even for an instant
        try:
            await web.UnixSite(self._runner, str(self.path)).start()
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        if self.metrics_port is not None:  # for a Prometheus scraper: metrics only, loopback only
            limits = self.metrics_port_limits
            listener = Listener("metrics", limits)
            metrics_app = web.Application(middlewares=[listener.track])
            metrics_app.router.add_get("/metrics", self._metrics_with_token)
            metrics_app.router.add_get("/healthz", self._healthz)
            metrics_app.router.add_get("/readyz", self._readyz_terse)
            self._metrics_runner = web.AppRunner(metrics_app, **limits.handler_kwargs())
            await self._metrics_runner.setup()
            await listener.serve(self._metrics_runner, "127.0.0.1", self.metrics_port)

    async def close(self) -> None:
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _chat(self, request: web.Request) -> web.Response:
        if self.cli is None:
            return web.json_response(
                {"error": "the cli channel is not enabled; add `cli: {}` under channels:"},
                status=409,
            )
        body = await read_object(request)
        try:
            reply = await self.cli.ask(
                str(body["agent"]),
                str(body["text"]),
                body.get("sender"),
                str(body.get("session") or ""),
            )
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.json_response({"reply": reply})

    async def _unread(self, request: web.Request) -> web.Response:
        """The replies of a CLI conversation that no `clawpen chat` was waiting for."""
        agent, session = request.query.get("agent", ""), request.query.get("session", "")
        address = Address("cli", agent, session)
        return web.json_response({"replies": await self.intake.store.take_unread(address)})

    async def _chat_more(self, request: web.Request) -> web.Response:
        """The next reply of a chat session that was shown an approval card."""
        if self.cli is None:
            return web.json_response({"error": "the cli channel is not enabled"}, status=409)
        body = await read_object(request)
        try:
            reply = await self.cli.more(str(body["agent"]), str(body.get("session") or ""))
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response({"reply": reply})

    async def _pairings(self, request: web.Request) -> web.Response:
        return web.json_response(self.intake.pairings_written())

    async def _pair(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        try:
            await self.intake.pair(self.intake.read_chat(str(body["chat"])), str(body["agent"]))
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.intake.pairings_written())

    async def _approve(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        try:
            chat = await self.intake.approve_code(str(body["code"]), str(body["agent"]))
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"chat": chat.chat_address, "agent": str(body["agent"])})

    async def _pending(self, request: web.Request) -> web.Response:
        pending = await self.intake.store.pending_pairing_codes(time.time())
        return web.json_response([{"chat": c, "expires_at": e} for c, e in pending])

    async def _unpair(self, request: web.Request) -> web.Response:
        written = request.match_info["address"]
        try:
            address = Address.parse(written)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not await self.intake.unpair(address):
            return web.json_response({"error": f"{written} is not paired"}, status=404)
        return web.json_response(self.intake.pairings_written())

    # -- approvals (issue 18) ---------------------------------------------------------------

    def _engine(self) -> Approvals:
        if self.intake.approvals is None:
            raise ClawpenError("this orchestrator runs no approvals")
        return self.intake.approvals

    async def _approvals(self, request: web.Request) -> web.Response:
        engine = self._engine()
        if request.query.get("all") == "1":
            found = await engine.store.approvals(pending_only=False, limit=50)
        else:
            found = await engine.pending()
        return web.json_response([describe_approval(a) for a in found])

    async def _decide_approval(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ("allow", "deny") or not request.match_info["id"].isdigit():
            return web.json_response({"error": "use /v1/approvals/ID/allow or deny"}, status=404)
        try:
            decided = await self._engine().decide(
                int(request.match_info["id"]), action == "allow", "cli", "cli"
            )
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(describe_approval(decided))

    async def _approval_hosts(self, request: web.Request) -> web.Response:
        hosts = await self._engine().allowed_hosts()
        return web.json_response([{"agent": a, "host": h, "since": t} for a, h, t in hosts])

    async def _revoke_host(self, request: web.Request) -> web.Response:
        agent, host = request.match_info["agent"], request.match_info["host"]
        if not await self._engine().store.revoke_egress(agent, host):
            return web.json_response({"error": f"{agent} has no {host} allowed"}, status=404)
        return web.json_response({"revoked": host, "agent": agent})

    # -- scheduled jobs ---------------------------------------------------------------------

    @staticmethod
    def _job_ref(request: web.Request) -> str:
        return job_ref(request.match_info["name"], request.query.get("agent"))

    def _scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise ClawpenError("this orchestrator runs no scheduler")
        return self.scheduler

    async def _jobs(self, request: web.Request) -> web.Response:
        jobs = await self._scheduler().jobs()
        return web.json_response([describe_job(job) for job in jobs])

    async def _add_job(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        try:
            spec = make_spec(
                str(body["name"]),
                str(body["agent"]),
                str(body["task"]),
                Address.parse(str(body["deliver_to"])),
                body.get("schedule"),
                body.get("every"),
                body.get("at"),
                str(body.get("timezone") or "UTC"),
                str(body.get("misfire") or "run_once"),
                int(body.get("max_failures") or 5),
                source="cli",
            )
            job = await self._scheduler().add(spec)
        except (ScheduleError, ClawpenError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(describe_job(job))

    async def _remove_job(self, request: web.Request) -> web.Response:
        try:
            await self._scheduler().remove(self._job_ref(request))
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response({"removed": self._job_ref(request)})

    async def _job_action(self, request: web.Request) -> web.Response:
        scheduler = self._scheduler()
        name, action = self._job_ref(request), request.match_info["action"]
        try:
            if action == "pause":
                return web.json_response(describe_job(await scheduler.pause(name)))
            if action == "resume":
                return web.json_response(describe_job(await scheduler.resume(name)))
            if action == "run":
                await scheduler.run_now(name)
                return web.json_response({"started": name})
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response({"error": f"no action {action!r}"}, status=404)

    async def _job_runs(self, request: web.Request) -> web.Response:
        scheduler = self._scheduler()
        try:
            job = await scheduler.get(self._job_ref(request))
            runs = await scheduler.history(f"{job.spec.agent_id}/{job.name}")
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response([describe_run(r, job.spec.timezone) for r in runs])

    # -- finding a chat to pair, and the agents' containers ----------------------------------

    async def _strangers(self, request: web.Request) -> web.Response:
        """Unpaired chats that wrote in the last week: what `clawpen pairings --pending` lists."""
        chats = await self.intake.store.stranger_chats(time.time() - 7 * 86_400)
        return web.json_response([dataclasses.asdict(chat) for chat in chats])

    async def _agents(self, request: web.Request) -> web.Response:
        pool = self.pool
        return web.json_response(
            [
                {
                    "id": agent_id,
                    "container": pool.containers.get(agent_id),
                    "connected": session.connected,
                    "busy": agent_id in pool.busy,
                    "paused": agent_id in pool.paused,
                }
                for agent_id, session in sorted(pool.sessions.items())
            ]
        )

    async def _agent_action(self, request: web.Request) -> web.Response:
        """``stop`` ends the container (the next message starts a fresh one); ``restart`` also
        starts it again now; ``reset`` stops it and empties its workspace."""
        pool = self.pool
        agent_id, action = request.match_info["agent"], request.match_info["action"]
        if agent_id not in pool.sessions:
            return web.json_response({"error": f"no agent {agent_id!r}"}, status=404)
        if action not in ("stop", "restart", "reset"):
            return web.json_response({"error": f"no action {action!r}"}, status=404)
        await pool.stop(agent_id, f"clawpen agents {action}")
        if action == "reset":
            reset = getattr(pool.runtime, "reset_workspace", None)
            if reset is None:
                return web.json_response({"error": "this runtime keeps no workspace"}, status=409)
            await reset(agent_id)
        if action == "restart":
            try:
                await pool.ensure(agent_id)
            except ClawpenError as exc:
                return web.json_response({"error": str(exc)}, status=503)
        return web.json_response({"agent": agent_id, "done": action})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status())

    async def _metrics(self, request: web.Request) -> web.Response:
        with contextlib.suppress(StoreError):  # a store that cannot answer: last known depth
            depth = await self.intake.store.outbox_depth()
            self.metrics.set_outbox_depth(depth, self.intake.settings.channel_settings())
        return web.Response(body=self.metrics.render(), content_type="text/plain")

    async def _metrics_with_token(self, request: web.Request) -> web.Response:
        """On a TCP port any local user can reach: agent names and counts only for the token
        (``Authorization: Bearer``, the token `clawpen dashboard` prints)."""
        if credential(self.token, request.headers, {}) is None:
            return web.Response(
                status=401,
                text="send the token: Authorization: Bearer <token from `clawpen dashboard`>\n",
                headers={"WWW-Authenticate": 'Bearer realm="clawpen"'},
            )
        return await self._metrics(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        """The process answers: alive (a liveness probe)."""
        return web.Response(text="ok\n")

    async def _problems(self) -> list[str]:
        return await self.readiness() if self.readiness is not None else []

    async def _readyz(self, request: web.Request) -> web.Response:
        """Started, and the store answers; on the admin socket, with what is wrong."""
        problems = await self._problems()
        text = "ready\n" if not problems else "not ready: " + "; ".join(problems) + "\n"
        return web.Response(text=text, status=503 if problems else 200)

    async def _readyz_terse(self, request: web.Request) -> web.Response:
        """The same verdict for anyone on the port, without the names in it."""
        ready = not await self._problems()
        return web.Response(
            text="ready\n" if ready else "not ready\n", status=200 if ready else 503
        )

    async def _dashboard(self, request: web.Request) -> web.Response:
        if self.dashboard is None:
            return web.json_response(
                {"error": "the dashboard is off; add `dashboard: {}` to clawpen.yaml and restart"},
                status=409,
            )
        return web.json_response(self.dashboard())
