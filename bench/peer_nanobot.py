"""nanobot, the peer: installed in a venv of its own, configured and run against the bench's
fakes (``peer.py`` measures it next to clawpen).

nanobot's Telegram channel has no base-URL setting: it always calls ``api.telegram.org``. It
takes an HTTP proxy (``channels.telegram.proxy``) and its HTTP client trusts what
``SSL_CERT_FILE`` names, so it is given the inspecting proxy of ``tests/fakes/tls_proxy.py``:
CONNECT ``api.telegram.org:443``, TLS ended with a certificate from the bench's own CA, the plain
bytes passed to the fake Telegram. Its Anthropic provider takes an ``apiBase``: the fake model,
directly. Its home (``~/.nanobot``) and workspace are in the run's scratch dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.tls_proxy import InspectingProxy, PrivateCA

from clawpen.demo.model import FakeModel

from .fakes import BenchTelegram
from .harness import wait_until
from .trees import REPO_ROOT

VERSION = "0.3.5"
PACKAGE = f"nanobot-ai=={VERSION}"
# The Telegram channel's own dependencies (its plugin manifest installs them on first use:
# pinned here instead, so that nothing is fetched while it runs)
CHANNEL_PACKAGES = (
    "python-telegram-bot[socks,webhooks]==22.8",
    "socksio==1.0.0",
    "python-socks[asyncio]==2.8.2",
)
CACHE = Path.home() / ".cache" / "clawpen-bench"
TELEGRAM_HOST = "api.telegram.org"
INSTALLED = "installed"  # written last: a venv without it is a broken install, made again


def venv_dir(version: str = VERSION) -> Path:
    return CACHE / f"nanobot-{version}"


def install(version: str = VERSION) -> Path:
    """nanobot's venv (reused when present): its own, so that none of its dependencies meets
    clawpen's. Returns the venv's directory."""
    home = venv_dir(version)
    if (home / INSTALLED).exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    print(f"  installing nanobot {version} into {home} (once: minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    done = subprocess.run(
        [*pip, f"nanobot-ai=={version}", *CHANNEL_PACKAGES], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"pip could not install nanobot-ai=={version} into {home}:"
            f" {(done.stderr or done.stdout)[-1500:]}"
        )
    (home / INSTALLED).write_text(f"nanobot-ai=={version}\n")
    return home


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nanobot_config(
    workspace: Path, model_url: str, api_key: str, telegram: BenchTelegram, proxy_url: str
) -> dict[str, Any]:
    """nanobot's config.json (camelCase, as its docs write it): the fake model through the
    Anthropic provider, Telegram through the proxy, everyone allowed. Streaming off, so that a
    reply is one ``sendMessage`` (as clawpen's is) rather than a message edited as it grows;
    progress and tool hints off (the fake model calls no tools). Its WebSocket channel off and
    its gateway on a free port, so that nothing clashes with other listeners."""
    return {
        "agents": {
            "defaults": {
                "workspace": str(workspace),
                "model": "anthropic/claude-bench",
                "provider": "anthropic",
                "timezone": "UTC",
            }
        },
        "providers": {"anthropic": {"apiKey": api_key, "apiBase": model_url}},
        "channels": {
            "sendProgress": False,
            "sendToolHints": False,
            "telegram": {
                "enabled": True,
                "token": telegram.token,
                "proxy": proxy_url,
                "allowFrom": ["*"],
                "streaming": False,
            },
            "websocket": {"enabled": False},
        },
        "gateway": {"host": "127.0.0.1", "port": free_port()},
    }


@dataclass
class Nanobot:
    """``nanobot gateway --foreground`` as a child process (under ``bench.guard``)."""

    pid: int
    guard: asyncio.subprocess.Process
    log: Path
    proxy: InspectingProxy

    async def stop(self, timeout: float = 30) -> None:
        if self.guard.returncode is None:
            self.guard.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.guard.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.guard.kill()
                await self.guard.wait()


@contextlib.asynccontextmanager
async def nanobot(
    root: Path, venv: Path, model: FakeModel, api_key: str, telegram: BenchTelegram
) -> AsyncIterator[Nanobot]:
    """nanobot running against ``telegram`` (through the inspecting proxy) and ``model``,
    yielded once it long-polls the fake."""
    ca = PrivateCA(root / "ca")  # makes root too
    proxy = InspectingProxy(ca, {TELEGRAM_HOST: telegram.url})
    await proxy.start()
    config = root / "config.json"
    raw = nanobot_config(root / "workspace", model.url, api_key, telegram, proxy.url)
    config.write_text(json.dumps(raw, indent=2) + "\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.lower().endswith("_proxy") and not key.startswith(("CLAWPEN", "VIRTUAL_ENV"))
    }
    env |= {"HOME": str(root / "home"), "SSL_CERT_FILE": str(ca.pem), "PYTHONUNBUFFERED": "1"}
    pid_file, log = root / "nanobot.pid", root / "nanobot.log"
    command = [str(venv / "bin" / "nanobot"), "gateway", "--foreground"]
    command += ["--config", str(config), "--workspace", str(root / "workspace")]
    guard = [sys.executable, "-m", "bench.guard", "--pid-file", str(pid_file), "--"]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *guard, *command, env=env, stdout=out, stderr=out, cwd=REPO_ROOT
        )
    running = Nanobot(0, process, log, proxy)
    try:
        calls_before = len(telegram.calls)

        def polling() -> bool:
            if process.returncode is not None:
                raise RuntimeError(
                    f"nanobot exited with {process.returncode}: {log.read_text()[-2000:]}"
                )
            return "getUpdates" in telegram.calls[calls_before:]

        await wait_until(polling, 120, "nanobot to long-poll the fake Telegram", 0.05)
        running.pid = int(pid_file.read_text())
        if not proxy.trusted(TELEGRAM_HOST):
            raise RuntimeError("nanobot reached the fake Telegram without the proxy's TLS")
        yield running
    finally:
        await running.stop()
        await proxy.close()
