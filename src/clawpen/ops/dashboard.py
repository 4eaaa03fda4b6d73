"""The dashboard's web server: a page, its JSON, and server-sent events, behind the token.

No build step and no CDN: the page is three files shipped in the package (``web/``), its chart
an inline SVG drawn by the page's script. Every answer carries a Content-Security-Policy that
allows only those files, so a hostile string in a chat message can never become a script.

Live updates: every log event goes to in-process subscribers (``logging.subscribe``); those in
``dashview.LIVE_EVENTS`` are passed to each open page as an event with the event's name only,
and the page asks for the overview again. The data itself only ever travels in answers to
requests that proved the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from structlog.typing import EventDict

from ..config import DashboardSettings
from ..core.scheduler import job_ref
from ..errors import ClawpenError
from ..obs.logging import get_logger, subscribe
from ..ports.listener import Listener
from ..ports.safejson import read_object
from ..security.webauth import COOKIE, credential, csrf_for, host_allowed, may_act
from .dashview import LIVE_EVENTS, DashboardView

MAX_CLIENTS = 16  # open pages at once; past that the oldest is let go
PING_EVERY = 15.0  # seconds: a comment line keeps proxies from closing an idle stream
STATIC = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DENIED_PAGE = """<!doctype html><meta charset="utf-8"><title>clawpen</title>
<p>This dashboard needs its token. Run <code>clawpen dashboard</code> on the server and open the
address it prints.</p>
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _web_file(name: str) -> bytes:
    return (resources.files("clawpen") / "web" / name).read_bytes()


class Dashboard:
    def __init__(self, settings: DashboardSettings, token: str, view: DashboardView) -> None:
        self.settings = settings
        self.token = token
        self.view = view
        self.log = get_logger()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._clients: list[asyncio.Queue[str]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def url(self) -> str:
        """The address `clawpen dashboard` prints: with the token, which the page trades for a
        cookie at once (and drops from the address bar)."""
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/?token={self.token}"

    def describe(self) -> dict[str, Any]:
        return {"url": self.url(), "token": self.token, "port": self.port}

    async def start(self) -> None:
        listener = Listener("dashboard", self.settings.port_limits)
        app = web.Application(middlewares=[listener.track, self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/overview", self._overview)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/pairings", self._pair)
        app.router.add_post("/api/agents/{agent}/stop", self._stop_agent)
        app.router.add_post("/api/jobs/{name}/{action}", self._job_action)
        app.router.add_post("/api/approvals/{id}/{action}", self._decide)
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=1,
            **self.settings.port_limits.handler_kwargs(),
        )
        await self._runner.setup()
        self.port = await listener.serve(self._runner, self.settings.host, self.settings.port)
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = subscribe(self._on_event)
        self.log.info("dashboard_started", host=self.settings.host, port=self.port)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for queue in self._clients:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait("")  # "" ends the stream
        if self._runner is not None:
            await self._runner.cleanup()

    # -- who may -----------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host", ""), self.settings.host):
            return _with_headers(web.Response(status=421, text="wrong host name\n"))
        how = credential(self.token, request.headers, request.cookies)
        if request.path == "/" and "token" in request.query:
            return self._login(request)
        if how is None:
            if request.path.startswith("/api/"):
                response: web.StreamResponse = web.json_response(
                    {"error": "the dashboard's token is needed"}, status=401
                )
            else:
                response = web.Response(status=401, text=DENIED_PAGE, content_type="text/html")
            return _with_headers(response)
        if request.method != "GET" and not may_act(self.token, how, request.headers):
            return _with_headers(
                web.json_response({"error": "missing or wrong CSRF header"}, status=403)
            )
        return _with_headers(await handler(request))

    def _login(self, request: web.Request) -> web.StreamResponse:
        """``/?token=...``: the right token becomes a cookie and the address loses it."""
        if credential(self.token, {"Authorization": "Bearer " + request.query["token"]}, {}):
            response = web.Response(status=303, headers={"Location": "/"})
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
            return _with_headers(response)
        self.log.warning("dashboard_token_refused", peer=request.remote)
        return _with_headers(web.Response(status=401, text=DENIED_PAGE, content_type="text/html"))

    # -- the page ----------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=_web_file("index.html"), content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_web_file(name), content_type=STATIC[name])

    async def _session(self, request: web.Request) -> web.Response:
        return web.json_response({"csrf": csrf_for(self.token)})

    async def _overview(self, request: web.Request) -> web.Response:
        return web.json_response(await self.view.overview())

    # -- live --------------------------------------------------------------------------------

    def _on_event(self, event: EventDict) -> None:
        """Called for every log event, on whatever thread logged it: never block here."""
        name = event.get("event")
        if name in LIVE_EVENTS and self._clients and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._publish, str(name))

    def _publish(self, name: str) -> None:
        data = json.dumps({"event": name})
        for queue in self._clients:
            with contextlib.suppress(asyncio.QueueFull):  # a slow page: it refreshes anyway
                queue.put_nowait(data)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS}
        )
        await response.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._clients.append(queue)
        if len(self._clients) > MAX_CLIENTS:
            with contextlib.suppress(asyncio.QueueFull):
                self._clients.pop(0).put_nowait("")
        try:
            await response.write(b"retry: 2000\nevent: hello\ndata: {}\n\n")
            while True:
                try:
                    async with asyncio.timeout(PING_EVERY):
                        data = await queue.get()
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if not data:
                    break
                await response.write(f"event: update\ndata: {data}\n\n".encode())
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._clients.remove(queue)
        return response

    # -- actions (token and CSRF checked by the guard) ---------------------------------------

    async def _pair(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        return await self._act(
            self.view.pair(str(body.get("chat", "")), str(body.get("agent", "")))
        )

    async def _stop_agent(self, request: web.Request) -> web.Response:
        return await self._act(self.view.stop_agent(request.match_info["agent"]))

    async def _job_action(self, request: web.Request) -> web.Response:
        info = request.match_info
        return await self._act(
            self.view.job_action(job_ref(info["name"], request.query.get("agent")), info["action"])
        )

    async def _decide(self, request: web.Request) -> web.Response:
        info = request.match_info
        return await self._act(self.view.decide(info["id"], info["action"]))

    async def _act(self, action: Awaitable[None]) -> web.Response:
        try:
            await action
        except ClawpenError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})


def _with_headers(response: web.StreamResponse) -> web.StreamResponse:
    if not response.prepared:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
    return response
