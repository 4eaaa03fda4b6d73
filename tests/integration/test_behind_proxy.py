"""Behind a TLS-inspecting proxy with a private CA, end to end (issue 24.2): the Telegram
adapter in its own process (another uid, which cannot read the CA file: it reads it before it
drops privileges) and the orchestrator's model client both go through ``HTTPS_PROXY`` and trust
``SSL_CERT_FILE``; ``clawpen doctor`` checks them the same way and says which proxy and bundle.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.netenv import NETWORK_ENV
from clawpen.ops.doctor import run_checks
from tests.conftest import running
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.tls_proxy import InspectingProxy, PrivateCA

TELEGRAM, MODEL = "api.telegram.test", "api.anthropic.test"


@pytest.fixture
async def proxy(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_model: FakeModel
) -> AsyncIterator[InspectingProxy]:
    ca = PrivateCA(tmp_path / "ca")  # under pytest's 0700 tmp dir: only root reads ca.pem
    server = InspectingProxy(ca, {TELEGRAM: fake_telegram.url, MODEL: fake_model.url})
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def corporate(monkeypatch: pytest.MonkeyPatch, proxy: InspectingProxy) -> dict[str, str]:
    for name in NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca.pem)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def test_adapter_process_and_model_client_go_through_the_proxy(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    proxy: InspectingProxy,
    corporate: dict[str, str],
    api_key: str,
) -> None:
    assert os.geteuid() == 0, "run the test suite as root: it hands the adapter another uid"
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        adapters="process",
        config_channels={
            "cli": {},
            "telegram": {
                "token": fake_telegram.token,
                "api_base_url": f"https://{TELEGRAM}",
                "poll_timeout": 2,
            },
        },
        model={"name": "claude-test", "base_url": f"https://{MODEL}", "api_key": api_key},
    )
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "hello from behind the proxy")
        await fake_telegram.wait_for_sent(1, timeout=30)
    assert fake_telegram.texts_to(1001) == ["echo: hello from behind the proxy"]
    assert f"{TELEGRAM}:443" in proxy.connects and proxy.trusted(TELEGRAM)
    assert f"{MODEL}:443" in proxy.connects and proxy.trusted(MODEL)


async def test_doctor_checks_through_the_proxy_and_names_it_and_the_bundle(
    tmp_path: Path,
    fake_telegram: FakeTelegram,
    proxy: InspectingProxy,
    corporate: dict[str, str],
    api_key: str,
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "data_dir: ./data\n"
        "docker_host: unix:///nonexistent/docker.sock\n"
        f"model:\n  base_url: https://{MODEL}\n  api_key: env:KEY\n"
        "agents:\n  - id: assistant\n"
        f"channels:\n  telegram: {{token: 'env:TG', api_base_url: 'https://{TELEGRAM}'}}\n"
    )
    config.chmod(0o600)
    env = {"KEY": api_key, "TG": fake_telegram.token, **corporate}
    checks = {c.name: c for c in await asyncio.to_thread(run_checks, config, env)}
    for name in ("network", "model", "channel telegram"):
        assert checks[name].verdict == "ok", checks[name]
        assert proxy.url in checks[name].detail and str(proxy.ca.pem) in checks[name].detail
    assert proxy.trusted(TELEGRAM) and proxy.trusted(MODEL)

    without = {k: v for k, v in env.items() if k != "SSL_CERT_FILE"}
    os.environ.pop("SSL_CERT_FILE")  # the probes read this process's environment, as adapters do
    checks = {c.name: c for c in await asyncio.to_thread(run_checks, config, without)}
    assert checks["channel telegram"].verdict == "fail"
    assert "the system's" in checks["channel telegram"].detail
    assert (
        checks["model"].verdict == "fail" and "CERTIFICATE_VERIFY_FAILED" in checks["model"].detail
    )
