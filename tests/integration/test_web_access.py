"""The agent's reach beyond its networkless container, with real containers: send_message to
its own chat and not another agent's, web_fetch from a local test server, and egress through
the loopback forwarder to an allowlisted local host only. The test server is the one loopback
port the test override (``allow_loopback_for_tests``) lets through; every other target is
refused before the orchestrator connects anywhere."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.fakes import serve_on_loopback
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

PAIRINGS = [
    {"channel": "telegram:1001", "agent": "assistant"},
    {"channel": "telegram:1002", "agent": "bob"},
]

EGRESS_PROBE = r"""
import http.client, urllib.request, os
PORT = int(os.environ["TEST_PORT"])
def get(url):
    try:
        return urllib.request.urlopen(url, timeout=30).read().decode()
    except Exception as e:
        return "ERR " + str(e)
def tunnel(host, port):
    c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=30)
    c.set_tunnel(host, port)
    try:
        c.request("GET", "/tunnel"); return c.getresponse().read().decode()
    except Exception as e:
        return "ERR " + str(e)
print("PLAIN", get(f"http://127.0.0.1:{PORT}/plain"))
print("TUNNEL", tunnel("127.0.0.1", PORT))
print("OTHERPORT", get(f"http://127.0.0.1:{PORT + 1}/"))
print("METADATA", get("http://169.254.169.254/latest/meta-data/"))
print("UNLISTED", tunnel("example.com", 443))
print("PROXY", os.environ.get("HTTPS_PROXY"))
"""


@pytest.fixture
async def local_site() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(
            text=f"<h1>Local</h1><p>reached {request.path}</p>", content_type="text/html"
        )

    app.router.add_get("/{tail:.*}", page)
    runner, url = await serve_on_loopback(app)
    yield int(url.rsplit(":", 1)[1]), hits
    await runner.cleanup()


def tool(name: str, **args: object) -> str:
    return f"tool: {name} {json.dumps(args)}"


async def test_send_message_and_web_fetch_from_inside_a_container(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    local_site: tuple[int, list[str]],
) -> None:
    port, hits = local_site
    orchestrator, _ = docker_orchestrator_factory(
        fake_telegram,
        agents=[{"id": "assistant", "web_fetch": {"enabled": True}}, {"id": "bob"}],
        pairings=PAIRINGS,
        allow_loopback_for_tests=[f"127.0.0.1:{port}"],
    )
    async with running(orchestrator):
        await fake_telegram.push_text(
            1001, tool("send_message", text="hello bob", to="telegram:1002")
        )
        await fake_telegram.wait_for_sent(1, timeout=90)
        await fake_telegram.push_text(1001, tool("send_message", text="a note first"))
        await fake_telegram.wait_for_sent(3, timeout=60)
        await fake_telegram.push_text(1001, tool("web_fetch", url=f"http://127.0.0.1:{port}/news"))
        await fake_telegram.wait_for_sent(4, timeout=60)
        await fake_telegram.push_text(1001, tool("web_fetch", url="http://10.0.0.1/"))
        await fake_telegram.wait_for_sent(5, timeout=60)
    texts = fake_telegram.texts_to(1001)
    assert "refused (403): telegram:1002 is not a chat paired with you" in texts[0]
    assert texts[1:3] == ["a note first", "tool said:\nsent to telegram:1001"]
    assert "HTTP 200, text/html" in texts[3] and "# Local\n\nreached /news" in texts[3]
    assert "refused (403): refused: a private address 10.0.0.1" in texts[4]
    assert fake_telegram.texts_to(1002) == []
    assert hits == ["/news"]


async def test_egress_reaches_an_allowlisted_host_only_from_inside_a_container(
    docker_orchestrator_factory: DockerOrchestratorFactory,
    fake_telegram: FakeTelegram,
    local_site: tuple[int, list[str]],
) -> None:
    port, hits = local_site
    orchestrator, _ = docker_orchestrator_factory(
        fake_telegram,
        agents=[{"id": "assistant", "egress": {"allow": [f"127.0.0.1:{port}"]}}],
        pairings=PAIRINGS[:1],
        allow_loopback_for_tests=[f"127.0.0.1:{port}"],
    )
    script = base64.b64encode(EGRESS_PROBE.encode()).decode()
    command = (
        f"run: echo {script} | base64 -d > /tmp/probe.py &&"
        f" env -u NO_PROXY -u no_proxy TEST_PORT={port} python3 /tmp/probe.py"
    )
    async with running(orchestrator):
        await fake_telegram.push_text(1001, command)
        await fake_telegram.wait_for_sent(1, timeout=90)
    lines = dict(
        line.split(" ", 1) for line in fake_telegram.texts_to(1001)[0].splitlines() if " " in line
    )
    assert "reached /plain" in lines["PLAIN"]
    assert "reached /tunnel" in lines["TUNNEL"]
    assert "403" in lines["OTHERPORT"]
    assert "403" in lines["METADATA"]
    assert "403" in lines["UNLISTED"]
    assert lines["PROXY"] == "http://127.0.0.1:3128"
    assert hits == ["/plain", "/tunnel"]
