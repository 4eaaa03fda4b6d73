"""discord.py, pointed at a REST base and gateway of our choosing, per client.

discord.py keeps both in class attributes (``Route.BASE``, ``DiscordWebSocket.DEFAULT_GATEWAY``)
shared by every client in the process. Rather than rewrite those globals, each client gets an
HTTP client that rewrites the URLs it is given: REST calls go to ``api_base_url`` + ``/v10``,
and the gateway connection discord.py would open at the default gateway goes to the one
``GET /gateway/bot`` returned (a RESUME uses READY's ``resume_gateway_url`` as it is).

A button's tap (``INTERACTION_CREATE``) is not parsed by discord.py: it would build an
``Interaction`` from the raw event (and a malformed one would end the gateway connection), and
route it through a registry of persistent ``View``s that would have to outlive restarts. The
raw event goes to the adapter instead, which reads it defensively and answers it on the
interaction callback endpoint, through this client's REST base.

Imported only by the Discord adapter, in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import INTERNAL_API_VERSION, HTTPClient, Route

from ... import netenv

# discord.py waits out a 429 itself when it is this short (its minimum for the setting);
# a longer one is raised, so the core can hold that chat back and go on with the others
MAX_RATELIMIT_WAIT = 30.0

# The bot never joins a voice channel: no warning at start-up that voice support is missing.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class RoutedHTTPClient(HTTPClient):
    def __init__(self, rest_base: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rest_base = f"{rest_base.rstrip('/')}/v{INTERNAL_API_VERSION}"
        self.gateway: yarl.URL | None = None  # set from GET /gateway/bot before connecting

    async def request(self, route: Route, **kwargs: Any) -> Any:
        if route.url.startswith(Route.BASE):
            route.url = self.rest_base + route.url[len(Route.BASE) :]
        return await super().request(route, **kwargs)

    async def ws_connect(self, url: str, *, compress: int = 0) -> aiohttp.ClientWebSocketResponse:
        asked = yarl.URL(url)
        default = DiscordWebSocket.DEFAULT_GATEWAY
        if self.gateway is not None and (asked.host, asked.path) == (default.host, default.path):
            url = str(self.gateway.with_query(asked.query))
        return await super().ws_connect(url, compress=compress)


class Bot(discord.Client):
    """A ``discord.Client`` that reads message text (the Message Content intent), keeps no
    message cache (the store has the messages), and talks to ``rest_base``."""

    def __init__(
        self,
        rest_base: str,
        received: Callable[[discord.Message], None],
        tapped: Callable[[Any], None] = lambda raw: None,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(
            intents=intents,
            max_messages=None,
            chunk_guilds_at_startup=False,
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT,
        )
        net = netenv.current()  # HTTPS_PROXY, NO_PROXY and the CA bundle, for REST and gateway
        http = RoutedHTTPClient(
            rest_base,
            self.loop,
            connector=net.connector(limit=0),
            proxy=net.proxy_for(rest_base),
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT,
        )
        self.http = http
        self._connection.http = http
        self.received = received
        self.tapped = tapped
        self._connection.parsers["INTERACTION_CREATE"] = tapped  # read raw: see above

    async def on_message(self, message: discord.Message) -> None:
        self.received(message)

    async def respond(self, interaction_id: str, token: str, payload: dict[str, Any]) -> None:
        """An interaction's one response (``POST /interactions/{id}/{token}/callback``)."""
        route = Route(
            "POST",
            "/interactions/{interaction_id}/{interaction_token}/callback",
            interaction_id=interaction_id,
            interaction_token=token,
        )
        await self.http.request(route, json=payload)

    async def follow_up(self, token: str, payload: dict[str, Any]) -> None:
        """A message after an interaction's response (``POST /webhooks/{app}/{token}``)."""
        route = Route(
            "POST",
            "/webhooks/{webhook_id}/{webhook_token}",
            webhook_id=self.application_id,
            webhook_token=token,
        )
        await self.http.request(route, json=payload)

    async def point_gateway(self) -> None:
        """Connect where ``GET /gateway/bot`` (on our REST base) says, not to discord.gg."""
        assert isinstance(self.http, RoutedHTTPClient)
        _, url, _ = await self.http.get_bot_gateway()
        self.http.gateway = yarl.URL(url)
