"""The admin socket: how the `clawpen` CLI talks to a running orchestrator.

A Unix socket with owner-only permissions: being able to connect is the authorization.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .channels.cli import CliChannel
from .dispatch import Dispatcher
from .errors import ClawpenError, StoreError
from .metrics import Metrics

ADMIN_SOCKET = "admin.sock"


class AdminServer:
    def __init__(
        self,
        path: Path,
        cli: CliChannel | None,
        dispatcher: Dispatcher,
        metrics: Metrics,
        status: Callable[[], Awaitable[dict[str, Any]]],
        metrics_port: int | None = None,
    ) -> None:
        self.path = path
        self.metrics_port = metrics_port
        self.cli = cli
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.status = status
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat", self._chat)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/pairings", self._pairings)
        app.router.add_post("/v1/pairings", self._pair)
        app.router.add_post("/v1/pairings/approve", self._approve)
        app.router.add_get("/v1/pairings/pending", self._pending)
        app.router.add_delete("/v1/pairings/{address}", self._unpair)
        app.router.add_get("/metrics", self._metrics)
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
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", self._metrics)
            self._metrics_runner = web.AppRunner(metrics_app, access_log=None)
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, "127.0.0.1", self.metrics_port).start()

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
        body = await request.json()
        try:
            reply = await self.cli.ask(str(body["agent"]), str(body["text"]), body.get("sender"))
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.json_response({"reply": reply})

    async def _pairings(self, request: web.Request) -> web.Response:
        return web.json_response(self.dispatcher.pairings)

    async def _pair(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            await self.dispatcher.pair(str(body["chat"]), str(body["agent"]))
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.dispatcher.pairings)

    async def _approve(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            chat = await self.dispatcher.approve_code(str(body["code"]), str(body["agent"]))
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"chat": chat, "agent": str(body["agent"])})

    async def _pending(self, request: web.Request) -> web.Response:
        pending = await self.dispatcher.store.pending_pairing_codes(time.time())
        return web.json_response([{"chat": c, "expires_at": e} for c, e in pending])

    async def _unpair(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        if not await self.dispatcher.unpair(address):
            return web.json_response({"error": f"{address} is not paired"}, status=404)
        return web.json_response(self.dispatcher.pairings)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain")
