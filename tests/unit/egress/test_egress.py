"""Egress: the per-agent proxy serves allowed hosts only, and never an inward address, checked
before connecting (the connect seam records every attempt)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from clawpen.egress.netpolicy import IPAddress, LoopbackExceptions, parse_target
from clawpen.egress.proxy import (
    BadRequest,
    EgressProxy,
    egress_allowed,
    parse_proxy_request,
    system_open,
)
from tests.fakes import serve_on_loopback


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.path} host={request.host}")

    app.router.add_get("/{tail:.*}", hello)
    runner, url = await serve_on_loopback(app)
    yield int(url.rsplit(":", 1)[1])
    await runner.cleanup()


class Rig:
    def __init__(self, tmp_path: Path, port: int, allow: list[str], names: dict[str, str]) -> None:
        self.port = port
        self.names = names
        self.connects: list[tuple[str, int]] = []
        self.proxy = EgressProxy(
            "agent",
            tmp_path / "egress.sock",
            allow,
            LoopbackExceptions.parse([f"127.0.0.1:{port}"]),
            self.resolve,
            self.open,
        )

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(self.names[host])]

    async def open(
        self, ip: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.connects.append((str(ip), port))
        assert (str(ip), port) == ("127.0.0.1", self.port), "connection to a refused target"
        return await system_open(ip, port)

    async def ask(self, head: str, then: str = "") -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.proxy.socket_path))
        writer.write(head.encode())
        if then:
            status = await reader.readuntil(b"\r\n\r\n")
            if not status.startswith(b"HTTP/1.1 200"):
                writer.close()
                return status.decode()
            writer.write(then.encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer.decode()


@pytest.fixture
async def rig(tmp_path: Path, upstream: int) -> AsyncIterator[Rig]:
    names = {"pkgs.test": "127.0.0.1", "intranet.test": "10.0.0.7", "meta.test": "169.254.169.254"}
    allow = [f"pkgs.test:{upstream}", "intranet.test", "meta.test:80", f"127.0.0.1:{upstream}"]
    r = Rig(tmp_path, upstream, allow, names)
    await r.proxy.start()
    yield r
    await r.proxy.close()


async def test_connect_to_an_allowed_host_tunnels_through(rig: Rig) -> None:
    answer = await rig.ask(
        f"CONNECT pkgs.test:{rig.port} HTTP/1.1\r\nHost: pkgs.test\r\n\r\n",
        "GET /simple HTTP/1.1\r\nHost: pkgs.test\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith("HTTP/1.1 200") and "hello /simple host=pkgs.test" in answer
    assert rig.connects == [("127.0.0.1", rig.port)]


async def test_a_plain_http_request_is_forwarded_once(rig: Rig) -> None:
    answer = await rig.ask(
        f"GET http://pkgs.test:{rig.port}/a?b=1 HTTP/1.1\r\nHost: pkgs.test:{rig.port}\r\n"
        "Proxy-Connection: keep-alive\r\n\r\n"
    )
    assert answer.startswith("HTTP/1.1 200") and f"hello /a host=pkgs.test:{rig.port}" in answer


@pytest.mark.parametrize(
    "head",
    [
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",  # not on the list
        "CONNECT pkgs.test:22 HTTP/1.1\r\n\r\n",  # listed, another port
        "CONNECT intranet.test:443 HTTP/1.1\r\n\r\n",  # listed, resolves to 10.x
        "GET http://meta.test/latest/meta-data/ HTTP/1.1\r\n\r\n",  # listed, metadata
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
        "CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1:{other} HTTP/1.1\r\n\r\n",
        "CONNECT localhost:{port} HTTP/1.1\r\n\r\n",
    ],
)
async def test_everything_else_is_refused_with_403_before_any_connection(
    rig: Rig, head: str
) -> None:
    answer = await rig.ask(head.format(port=rig.port, other=rig.port + 1))
    assert answer.startswith("HTTP/1.1 403 Forbidden")
    assert rig.connects == []


async def test_garbage_is_a_400_and_the_proxy_lives(rig: Rig) -> None:
    assert (await rig.ask("\x00\x01 nonsense\r\n\r\n")).startswith("HTTP/1.1 400")
    assert (await rig.ask("GET /relative HTTP/1.1\r\n\r\n")).startswith("HTTP/1.1 400")
    answer = await rig.ask(f"GET http://pkgs.test:{rig.port}/still HTTP/1.1\r\n\r\n")
    assert "hello /still" in answer


def test_the_allow_list_means_exact_hosts_and_443_or_80_by_default() -> None:
    allow = ["pypi.org", "files.pythonhosted.org:443"]
    assert egress_allowed(parse_target("https://pypi.org/"), allow)
    assert egress_allowed(parse_target("http://pypi.org/"), allow)
    assert not egress_allowed(parse_target("https://pypi.org:8443/"), allow)
    assert not egress_allowed(parse_target("https://evil.pypi.org/"), allow)
    assert egress_allowed(parse_target("https://files.pythonhosted.org/"), allow)
    assert not egress_allowed(parse_target("http://files.pythonhosted.org/"), allow)


def test_a_forwarded_request_loses_its_hop_headers() -> None:
    request = parse_proxy_request(
        b"POST http://a.test/x HTTP/1.1\r\nHost: b.test\r\nProxy-Authorization: b\r\n"
        b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\n"
    )
    assert request.head == (
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    )
    with pytest.raises(BadRequest):
        parse_proxy_request(b"CONNECT a.test HTTP/1.1\r\n\r\n")


def test_a_container_with_egress_still_has_no_network_only_the_proxy_env(tmp_path: Path) -> None:
    from clawpen.runtime.base import AgentSpec
    from clawpen.runtime.docker import container_spec

    plain = container_spec(AgentSpec("a", "i", "img", tmp_path))
    egress = container_spec(AgentSpec("a", "i", "img", tmp_path, egress=True))
    assert plain["network_mode"] == egress["network_mode"] == "none"
    assert (
        "HTTPS_PROXY" not in plain["environment"] and "CLAWPEN_EGRESS" not in plain["environment"]
    )
    assert egress["environment"]["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert egress["environment"]["http_proxy"] == "http://127.0.0.1:3128"
    assert egress["environment"]["CLAWPEN_EGRESS"] == "1"
