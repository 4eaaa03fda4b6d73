"""Behind a corporate proxy that inspects TLS with a private CA (issue 24.2): every adapter,
through its own client library (python-telegram-bot, slack_sdk, discord.py, aiohttp), reaches
its platform through ``HTTPS_PROXY`` and trusts the CA that ``SSL_CERT_FILE`` names; without
that bundle it fails on the certificate, and says so; ``NO_PROXY`` sends it direct.

The platforms' hosts (``*.test``) do not resolve: only a client that asks the proxy gets there.
The proxy (``tests/fakes/tls_proxy.py``) records each CONNECT and whether the client trusted the
certificate it presented."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clawpen.channels.base import Channel
from clawpen.channels.discord import DiscordAdapter, DiscordSettings
from clawpen.channels.slack import SlackAdapter, SlackSettings
from clawpen.channels.telegram import TelegramAdapter, TelegramSettings
from clawpen.channels.whatsapp import WhatsAppAdapter, WhatsAppSettings
from clawpen.models import Decision, InboundMessage, OutboundMessage, Route
from clawpen.netenv import NETWORK_ENV, NetEnv
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.fake_whatsapp import FakeWhatsApp
from tests.fakes.tls_proxy import InspectingProxy, PrivateCA
from tests.waiting import until

TELEGRAM, SLACK, DISCORD, GRAPH = "api.telegram.test", "slack.test", "discord.test", "graph.test"


class Inbox:
    """The core's ``accept``: takes every message."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []

    async def __call__(self, message: InboundMessage) -> Decision | None:
        self.messages.append(message)
        return Route("assistant")

    async def delivery_status(self, *args: Any) -> None:
        return None

    async def first(self) -> InboundMessage:
        await until(lambda: self.messages, what="a message handed in")
        return self.messages[0]


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA(tmp_path / "ca")


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, Any]]:
    servers: dict[str, Any] = {
        TELEGRAM: FakeTelegram(),
        SLACK: FakeSlack(),
        DISCORD: FakeDiscord(),
        GRAPH: FakeWhatsApp(),
    }
    for server in servers.values():
        await server.start()
    yield servers
    for server in servers.values():
        await server.close()


@pytest.fixture
async def proxy(ca: PrivateCA, fakes: dict[str, Any]) -> AsyncIterator[InspectingProxy]:
    routes = {host: fake.url.removesuffix("/api/") for host, fake in fakes.items()}
    server = InspectingProxy(ca, routes)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def network(
    monkeypatch: pytest.MonkeyPatch, proxy: InspectingProxy, ca: PrivateCA
) -> Callable[..., None]:
    """Sets this process's proxy and CA variables (adapters here run in this process)."""

    def use(ca_file: bool = True, no_proxy: str = "") -> None:
        for name in NETWORK_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)  # the fakes' own ws:// links go through too
        if ca_file:
            monkeypatch.setenv("SSL_CERT_FILE", str(ca.pem))
        if no_proxy:
            monkeypatch.setenv("no_proxy", no_proxy)

    use()
    return use


@contextlib.asynccontextmanager
async def running(adapter: Channel, inbox: Inbox) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(adapter.run(inbox))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def round_trip(
    adapter: Channel, user_writes: Callable[[], Awaitable[Any]], replies: Callable[[], list[str]]
) -> None:
    """A user's message comes in through the adapter, and its answer goes out."""
    inbox = Inbox()
    async with running(adapter, inbox):
        await user_writes()
        message = await inbox.first()
        await adapter.send(OutboundMessage(message.address, "answered through the proxy"))
        await until(lambda: "answered through the proxy" in replies(), what="the answer sent")


async def test_telegram_goes_through_the_proxy_and_trusts_the_private_ca(
    network: Callable[..., None], proxy: InspectingProxy, fakes: dict[str, Any]
) -> None:
    telegram: FakeTelegram = fakes[TELEGRAM]
    adapter = TelegramAdapter(
        TelegramSettings(token=telegram.token, api_base_url=f"https://{TELEGRAM}", poll_timeout=1)
    )
    await round_trip(
        adapter, lambda: telegram.push_text(1001, "hi"), lambda: telegram.texts_to(1001)
    )
    assert f"{TELEGRAM}:443" in proxy.connects and proxy.trusted(TELEGRAM)


async def test_slack_goes_through_the_proxy_and_trusts_the_private_ca(
    network: Callable[..., None], proxy: InspectingProxy, fakes: dict[str, Any]
) -> None:
    slack: FakeSlack = fakes[SLACK]
    settings = SlackSettings(
        bot_token=slack.bot_token, app_token=slack.app_token, api_base_url=f"https://{SLACK}/api"
    )
    adapter = SlackAdapter(settings)

    async def user_writes() -> None:
        await slack.wait_for_connections(1, timeout=10)
        await slack.post_user_message("D0123ABCD", "hi")

    await round_trip(adapter, user_writes, lambda: slack.texts_to("D0123ABCD"))
    assert f"{SLACK}:443" in proxy.connects and proxy.trusted(SLACK)


async def test_discord_goes_through_the_proxy_and_trusts_the_private_ca(
    network: Callable[..., None], proxy: InspectingProxy, fakes: dict[str, Any]
) -> None:
    discord: FakeDiscord = fakes[DISCORD]
    adapter = DiscordAdapter(
        DiscordSettings(token=discord.token, api_base_url=f"https://{DISCORD}/api")
    )

    async def user_writes() -> None:
        await discord.wait_connected()
        await discord.post_user_message(discord.dm_channel_id, "hi", guild=False)

    await round_trip(adapter, user_writes, lambda: discord.texts_to(discord.dm_channel_id))
    assert f"{DISCORD}:443" in proxy.connects and proxy.trusted(DISCORD)
    assert any("/gateway" in url for url in proxy.forwarded)  # the gateway, through it too


async def test_whatsapp_goes_through_the_proxy_and_trusts_the_private_ca(
    network: Callable[..., None], proxy: InspectingProxy, fakes: dict[str, Any]
) -> None:
    meta: FakeWhatsApp = fakes[GRAPH]
    adapter = WhatsAppAdapter(
        WhatsAppSettings.model_validate({**meta.settings(), "api_base_url": f"https://{GRAPH}"})
    )

    async def user_writes() -> None:
        await until(adapter.listening.is_set, what="the webhook listening")
        meta.webhook_url = adapter.url  # Meta posts to us directly: inbound, no proxy
        meta.user_says("4915112345678", "hi")

    await round_trip(adapter, user_writes, lambda: meta.texts_to("4915112345678"))
    assert f"{GRAPH}:443" in proxy.connects and proxy.trusted(GRAPH)


async def test_without_the_private_ca_the_certificate_is_refused_and_said(
    network: Callable[..., None], proxy: InspectingProxy, fakes: dict[str, Any]
) -> None:
    network(ca_file=False)
    telegram: FakeTelegram = fakes[TELEGRAM]
    adapter = TelegramAdapter(
        TelegramSettings(token=telegram.token, api_base_url=f"https://{TELEGRAM}", poll_timeout=1)
    )
    inbox = Inbox()
    with pytest.raises(Exception) as refused:  # noqa: PT011: PTB's NetworkError, from aiohttp's
        async with asyncio.timeout(30), running(adapter, inbox) as task:
            await task
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert f"{TELEGRAM}:443" in proxy.connects and not proxy.trusted(TELEGRAM)


async def test_no_proxy_sends_a_host_direct(network: Callable[..., None]) -> None:
    network(no_proxy=f"localhost,127.0.0.1,.{TELEGRAM.split('.', 1)[1]}")
    net = NetEnv.from_environ()
    assert net.proxy_for(f"https://{TELEGRAM}/bot1/getMe") is None
    assert net.proxy_for(f"https://{SLACK}/api") is not None
    assert net.proxy_for("http://127.0.0.1:9/") is None
    assert net.proxy_for(f"ws://{SLACK}/link") is not None


def test_upper_and_lower_case_names_and_a_hidden_password() -> None:
    net = NetEnv.from_environ(
        {"HTTPS_PROXY": "http://u:secret@upper:3128", "https_proxy": "http://u:secret@lower:3128"}
    )
    assert net.proxy_for("https://api.telegram.org") == "http://u:secret@lower:3128"
    assert "secret" not in net.describe() and "lower:3128" in net.describe()


def test_an_unreadable_bundle_is_named_with_its_fix(tmp_path: Path) -> None:
    from clawpen.netenv import CABundleError

    with pytest.raises(CABundleError) as refused:
        NetEnv(ca_file=str(tmp_path / "missing.pem")).ssl_context()
    assert "SSL_CERT_FILE=" in str(refused.value) and "readable PEM" in refused.value.fix


async def test_email_oauth2_refreshes_its_token_through_the_proxy_and_the_private_ca(
    monkeypatch: pytest.MonkeyPatch, ca: PrivateCA
) -> None:
    """google-auth's requests would read certifi's bundle and REQUESTS_CA_BUNDLE, never
    SSL_CERT_FILE: the adapter hands it ours."""
    from aiohttp import web

    from clawpen.channels.email.oauth2 import Tokens
    from clawpen.channels.email.settings import OAuth2Settings
    from tests.fakes import serve_on_loopback

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert form.get("refresh_token") == "refresh-me"
        return web.json_response({"access_token": "ya29.t", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner, url = await serve_on_loopback(app, 0)
    server = InspectingProxy(ca, {"oauth.test": url})
    await server.start()
    try:
        for name in NETWORK_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", server.url)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.pem))
        settings = OAuth2Settings(
            client_id="c",
            client_secret="s",
            refresh_token="refresh-me",
            token_uri="https://oauth.test/token",
        )
        assert await Tokens(settings).get() == "ya29.t"
    finally:
        await server.close()
        await runner.cleanup()
    assert "oauth.test:443" in server.connects and server.trusted("oauth.test")


async def test_a_ca_directory_in_ssl_cert_dir_is_trusted_too(
    network: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    proxy: InspectingProxy,
    fakes: dict[str, Any],
    ca: PrivateCA,
    tmp_path: Path,
) -> None:
    """SSL_CERT_DIR: a directory of certificates named by their hash (``openssl rehash``)."""
    network(ca_file=False)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "corporate.pem").write_bytes(ca.pem.read_bytes())
    rehash = ["openssl", "rehash", str(certs)]
    await asyncio.to_thread(subprocess.run, rehash, check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(certs))
    telegram: FakeTelegram = fakes[TELEGRAM]
    adapter = TelegramAdapter(
        TelegramSettings(token=telegram.token, api_base_url=f"https://{TELEGRAM}", poll_timeout=1)
    )
    await round_trip(
        adapter, lambda: telegram.push_text(1001, "hi"), lambda: telegram.texts_to(1001)
    )
    assert proxy.trusted(TELEGRAM)
    assert f"{certs} (SSL_CERT_DIR)" in NetEnv.from_environ().describe()
