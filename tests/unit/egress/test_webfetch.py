"""web_fetch: a local test server is fetched; inward targets, directly or by a redirect, are
refused before any connection (the connect seam records every attempt and would refuse one)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from clawpen.config import load_settings
from clawpen.egress.hostaddrs import host_addresses
from clawpen.egress.htmltext import html_to_text
from clawpen.egress.netpolicy import IPAddress, LoopbackExceptions, Refused
from clawpen.egress.webfetch import FetchLimits, Streams, WebFetcher, system_connect
from clawpen.errors import ConfigError
from tests.fakes import serve_on_loopback
from tests.fakes.slowloris import SlowLoris

PAGE = (
    "<html><head><title>Hello page</title><script>steal()</script></head>"
    "<body><h1>Hello</h1><p>Some <b>bold</b> text and <a href='/next'>a link</a>.</p>"
    "<ul><li>one</li><li>two</li></ul></body></html>"
)


DEFAULT = FetchLimits()


class Server:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()

        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits.append(request.path_qs)
            path = request.path
            if path == "/page":
                return web.Response(text=PAGE, content_type="text/html")
            if path == "/redirect":
                raise web.HTTPFound(request.query["to"])
            if path == "/big":
                return web.Response(text="x" * 50_000, content_type="text/plain")
            if path == "/slow":
                response = web.StreamResponse()
                await response.prepare(request)
                await response.write(b"a")
                await self.release.wait()
                return response
            if path == "/binary":
                return web.Response(body=b"\x89PNG", content_type="image/png")
            if path == "/loop":
                raise web.HTTPFound("/loop")
            return web.Response(text=f"plain {path}", content_type="text/plain")

        app.router.add_get("/{tail:.*}", handle)
        return app


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    runner, url = await serve_on_loopback(s.app())
    s.port = int(url.rsplit(":", 1)[1])
    yield s
    s.release.set()
    await runner.cleanup()


class Net:
    """The resolver and connector seams: names from a table, every connect recorded; a
    connect to anything but the test server is refused here, so a bug could not send traffic
    to a private address even if the policy let it through."""

    def __init__(self, port: int, names: dict[str, list[str]]) -> None:
        self.port = port
        self.names = names
        self.resolved: list[str] = []
        self.connects: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.resolved.append(host)
        answers = self.names[host]
        if len(answers) > 1 and len(self.resolved) > 1:
            answers = answers[1:]  # rebinding: a different answer the second time
        return [ipaddress.ip_address(a) for a in answers[:1]]

    async def connect(
        self, ip: IPAddress, port: int, tls: ssl.SSLContext | None, name: str
    ) -> Streams:
        self.connects.append((str(ip), port))
        assert (str(ip), port) == ("127.0.0.1", self.port), "connection to a refused target"
        return await system_connect(ip, port, tls, name)


def fetcher(
    server: Server, limits: FetchLimits = DEFAULT, **names: list[str]
) -> tuple[WebFetcher, Net]:
    net = Net(server.port, {k.replace("_", "."): v for k, v in names.items()})
    exceptions = LoopbackExceptions.parse([f"127.0.0.1:{server.port}"])
    return WebFetcher(exceptions, net.resolve, net.connect, limits), net


async def test_a_page_from_the_allowed_test_server_is_read_as_text(server: Server) -> None:
    web_fetcher, net = fetcher(server, site_test=["127.0.0.1"])
    page = await web_fetcher.fetch(f"http://site.test:{server.port}/page", None, 10_000)
    assert page.status == 200 and page.content_type == "text/html"
    assert page.text.startswith("Hello page\n\n# Hello")
    assert "Some bold text and a link (/next)." in page.text
    assert "- one\n- two" in page.text
    assert "steal" not in page.text
    assert net.connects == [("127.0.0.1", server.port)]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{other}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:{port}/",
        "http://2130706433:{other}/",
        "http://0x7f.1:{other}/",
        "http://localhost:{port}/",
        "http://intranet.test/",
        "http://metadata.test/",
    ],
)
async def test_inward_targets_are_refused_before_any_connection(server: Server, url: str) -> None:
    web_fetcher, net = fetcher(
        server, intranet_test=["10.9.8.7"], metadata_test=["169.254.169.254"]
    )
    with pytest.raises(Refused):
        await web_fetcher.fetch(url.format(port=server.port, other=server.port + 1), None, 100)
    assert net.connects == [] and server.hits == []


@pytest.mark.parametrize(
    "to",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/admin",
        "http://127.0.0.1:{other}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://intranet.test/",
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_to_an_inward_target_is_refused_before_connecting_to_it(
    server: Server, to: str
) -> None:
    web_fetcher, net = fetcher(server, intranet_test=["10.9.8.7"])
    target = to.format(port=server.port, other=server.port + 1)
    with pytest.raises(Refused):
        await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/redirect?to={target}", None, 100)
    assert net.connects == [("127.0.0.1", server.port)]  # the first hop only
    assert server.hits == [f"/redirect?to={target}"]


async def test_a_redirect_within_the_allowed_server_is_followed(server: Server) -> None:
    web_fetcher, _ = fetcher(server)
    page = await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/redirect?to=/page", None, 100)
    assert page.url == f"http://127.0.0.1:{server.port}/page"
    assert page.text.startswith("Hello page")


async def test_the_checked_address_is_the_one_connected_to_dns_rebinding(server: Server) -> None:
    # the name answers 127.0.0.1 (allowed for this test), then 10.0.0.1: never asked twice
    web_fetcher, net = fetcher(server, rebind_test=["127.0.0.1", "10.0.0.1"])
    page = await web_fetcher.fetch(f"http://rebind.test:{server.port}/x", None, 100)
    assert page.text == "plain /x"
    assert net.resolved == ["rebind.test"]
    assert net.connects == [("127.0.0.1", server.port)]


async def test_too_many_redirects_end_the_fetch(server: Server) -> None:
    web_fetcher, net = fetcher(server, FetchLimits(max_redirects=3))
    with pytest.raises(Refused, match="more than 3 redirects"):
        await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/loop", None, 100)
    assert len(net.connects) == 4


async def test_a_body_past_the_size_limit_is_cut_and_said_so(server: Server) -> None:
    web_fetcher, _ = fetcher(server, FetchLimits(max_bytes=1000))
    page = await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/big", None, 100_000)
    assert page.truncated and page.text == "x" * 1000
    short = await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/big", None, 10)
    assert short.text == "x" * 10


async def test_a_server_that_stalls_is_given_up_at_the_time_limit(server: Server) -> None:
    web_fetcher, _ = fetcher(server, FetchLimits(timeout=0.5))
    with pytest.raises(TimeoutError):
        await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/slow", None, 100)


async def test_binary_content_is_refused(server: Server) -> None:
    web_fetcher, _ = fetcher(server)
    with pytest.raises(Refused, match="image/png is not text"):
        await web_fetcher.fetch(f"http://127.0.0.1:{server.port}/binary", None, 100)


async def test_the_domain_allow_list_is_checked_before_resolving(server: Server) -> None:
    web_fetcher, net = fetcher(server, www_site_test=["127.0.0.1"], other_test=["127.0.0.1"])
    with pytest.raises(Refused, match="not on this agent's allow list"):
        await web_fetcher.fetch(f"http://other.test:{server.port}/", ["site.test"], 100)
    assert net.resolved == [] and net.connects == []
    page = await web_fetcher.fetch(f"http://www.site.test:{server.port}/ok", ["site.test"], 100)
    assert page.text == "plain /ok"


def test_html_becomes_the_text_a_reader_sees() -> None:
    html = (
        "<style>p{}</style><h2>Title</h2><p>one\n   two</p><pre>  keep\n    this</pre>"
        "<table><tr><th>a</th><td>b</td></tr></table><img alt='cat'><p>&amp; &lt;done&gt;"
    )
    assert (
        html_to_text(html)
        == "## Title\n\none two\n\n  keep\n    this\n\n| a | b\n[image: cat]\n\n& <done>"
    )
    assert html_to_text("<p>broken <b>markup") == "broken markup"


def test_the_loopback_override_cannot_come_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "model: {api_key: x}\nagents: [{id: a}]\nallow_loopback_for_tests: ['127.0.0.1:80']\n"
    )
    with pytest.raises(ConfigError, match="only tests may set this"):
        load_settings(config, env={})


def test_web_access_is_configured_as_the_issue_writes_it(tmp_path: Path) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "model: {api_key: x}\n"
        "agents:\n"
        "  - id: a\n"
        "    web_fetch: {enabled: true, allow_domains: [docs.python.org]}\n"
        '    egress: {allow: ["pypi.org", "files.pythonhosted.org:443"]}\n'
        "  - id: b\n"
    )
    settings = load_settings(config, env={})
    a, b = settings.agents
    assert a.web_fetch.enabled and a.web_fetch.allow_domains == ["docs.python.org"]
    assert a.egress.allow == ["pypi.org", "files.pythonhosted.org:443"]
    assert not b.web_fetch.enabled and b.egress.allow == []  # off by default


# -- issue 23: a deadline for the whole exchange, the host's own addresses, hidden text ----------


@pytest.fixture
async def slowloris() -> AsyncIterator[SlowLoris]:
    server = await SlowLoris().start()
    yield server
    await server.close()


async def test_a_server_that_dribbles_its_status_line_is_cut_off_at_the_deadline(
    slowloris: SlowLoris,
) -> None:
    exceptions = LoopbackExceptions.parse([f"127.0.0.1:{slowloris.port}"])
    web_fetcher = WebFetcher(exceptions, limits=FetchLimits(timeout=0.5))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await web_fetcher.fetch(f"http://127.0.0.1:{slowloris.port}/", None, 100)
    assert time.monotonic() - started < 3
    # and the connection is dropped then, not left to a thread that reads on for days
    await slowloris.wait_until(lambda s: s.dropped == 1, timeout=5)


PUBLIC = "93.184.215.14"


@pytest.mark.parametrize("url", [f"http://{PUBLIC}:{{port}}/", "http://myhost.test:{port}/"])
async def test_the_hosts_own_public_address_is_refused_by_address_and_by_name(
    server: Server, url: str
) -> None:
    net = Net(server.port, {"myhost.test": [PUBLIC]})
    own = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(PUBLIC)})
    web_fetcher = WebFetcher(resolve=net.resolve, connect=net.connect, own_addresses=lambda: own)
    with pytest.raises(Refused, match=f"{PUBLIC} is an address of this host"):
        await web_fetcher.fetch(url.format(port=server.port), None, 100)
    assert net.connects == [] and server.hits == []


def test_the_host_addresses_are_those_of_every_interface() -> None:
    listed = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True).stdout)
    expected = {
        ipaddress.ip_address(a["local"]) for link in listed for a in link.get("addr_info", [])
    }
    assert any(not ip.is_loopback for ip in expected)  # eth0 or docker0 at least
    assert host_addresses() == expected


@pytest.mark.parametrize(
    "html",
    [
        "<p style='display:none'>SECRET</p>",
        "<div style='color: red; DISPLAY : none !important'>SECRET</div>",
        "<span style='visibility:hidden'>SECRET</span>",
        "<div hidden><p>SECRET</p><div>SECRET</div>SECRET</div>",
        "<div hidden/>SECRET</div>",
        "<span aria-hidden='true'>SECRET</span>",
        "<img hidden alt='SECRET'>",
        "<style>.x{display:none}</style><p class='y x'>SECRET</p>",
        "<style>p#z { visibility: hidden }</style><p id='z'>SECRET</p>",
        "<p class='x'>SECRET</p><style>@media screen { .a, .x { display: none } }</style>",
    ],
)
def test_text_a_reader_does_not_see_does_not_reach_the_model(html: str) -> None:
    text = html_to_text(f"<body><p>before</p>{html}<p>after</p></body>")
    assert "SECRET" not in text
    assert text.startswith("before") and text.endswith("after")


def test_what_is_shown_stays_shown_beside_hidden_text() -> None:
    html = (
        "<style>.menu .item{display:none} body{display:none}</style>"
        "<div style='display:block'>shown one</div><div hidden>gone</div><div>shown two</div>"
        "<p class='item'>shown three</p><span aria-hidden='false'>shown four</span>"
    )
    assert html_to_text(html) == "shown one\n\nshown two\n\nshown three\nshown four"
