"""Adding a platform touches its own package and one entry point, nothing else.

The test installs a throwaway platform the way a pip install would: a package and a
``.dist-info`` with its ``clawpen.channels`` entry point, in a directory put on the path of a
fresh Python process. (A fresh one, because the ``channels:`` schema is built from the installed
platforms when ``clawpen.config`` is first imported, as in every real start.) That process, this
file run as ``python -m``, then checks everything a user would: the config takes a
``throwaway:`` block and refuses a bad key in it, ``clawpen doctor`` runs its probe,
``clawpen status`` shows it, and a message said in it reaches an agent (the in-process runtime,
the fake model) and is answered there.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]

PLATFORM = '''
"""A platform that exists only in a test: its chat is this process's memory."""

from __future__ import annotations

import asyncio
import itertools

from clawpen.channels.base import Accept, ChannelPlugin, ChannelSettings, Finding
from clawpen.models import Address, InboundMessage, OutboundMessage

ADAPTERS: list[ThrowawayAdapter] = []  # the test finds the running adapter here


class ThrowawaySettings(ChannelSettings):
    token: str


class ThrowawayAdapter:
    name = "throwaway"
    max_message_length = 1000

    def __init__(self, settings: ThrowawaySettings) -> None:
        self.said: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.answers: asyncio.Queue[OutboundMessage] = asyncio.Queue()
        self.ids = itertools.count(1)
        ADAPTERS.append(self)

    async def run(self, accept: Accept) -> None:
        while True:
            await accept(await self.said.get())

    async def send(self, message: OutboundMessage) -> str:
        await self.answers.put(message)
        return f"out-{next(self.ids)}"

    async def typing(self, address: Address, message_id: str, active: bool) -> None:
        pass


async def probe(settings: ThrowawaySettings) -> Finding:
    if settings.token == "good":
        return None
    return ("throwaway refused the token", "set channels.throwaway.token to good")


plugin = ChannelPlugin(
    name="throwaway",
    settings=ThrowawaySettings,
    adapter=ThrowawayAdapter,
    chat_pattern=r"room-[0-9]+",
    chat_example="throwaway:room-1",
    max_message_length=ThrowawayAdapter.max_message_length,
    credentials=("token",),
    probe=probe,
)
'''


def install(site: Path) -> None:
    """What pip leaves behind: the package, and its metadata naming the entry point."""
    package = site / "clawpen_throwaway"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PLATFORM))
    info = site / "clawpen_throwaway-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clawpen-throwaway\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[clawpen.channels]\nthrowaway = clawpen_throwaway:plugin\n"
    )


async def test_a_platform_installed_as_a_plugin_is_configured_probed_shown_and_answers(
    tmp_path: Path,
) -> None:
    install(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.unit.channels.test_a_new_platform",
        str(tmp_path / "work"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])

    assert "throwaway" in seen["platforms"]
    assert "channels.throwaway.colour" in seen["bad_key"]
    assert "FAIL  channel throwaway: throwaway refused the token" in seen["doctor"]
    assert "fix: set channels.throwaway.token to good" in seen["doctor"]
    assert seen["status"]["channels"]["throwaway"]["state"] == "running"
    assert seen["answer"]["address"] == {"channel": "throwaway", "chat": "room-1", "thread": ""}
    assert "hello through a new platform" in seen["answer"]["text"]


# -- the fresh process -----------------------------------------------------------------------


def _config(work: Path, model_url: str, block: dict[str, Any]) -> Path:
    path = work / f"clawpen-{len(list(work.glob('*.yaml')))}.yaml"
    raw = {
        "data_dir": str(work / "data"),
        "docker_host": "unix:///nonexistent/docker.sock",
        "model": {"name": "claude-test", "base_url": model_url, "api_key": "env:KEY"},
        "agents": [{"id": "assistant", "system_prompt": "You are a test."}],
        "channels": {"cli": {}, "throwaway": block},
        "pairings": [{"channel": "throwaway:room-1", "agent": "assistant"}],
    }
    path.write_text(json.dumps(raw))  # JSON is YAML
    path.chmod(0o600)
    return path


async def _clawpen(*args: str) -> str:
    """The ``clawpen`` command, as a user runs it; its output, whatever its exit status."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clawpen", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out.decode()


async def _in_a_fresh_process(work: Path) -> dict[str, Any]:
    import clawpen_throwaway  # type: ignore[import-not-found]  # installed by the test

    from clawpen.app import Orchestrator
    from clawpen.channels.registry import plugins
    from clawpen.config import load_settings
    from clawpen.demo.model import FakeModel
    from clawpen.errors import ClawpenError
    from clawpen.models import Address, InboundMessage
    from clawpen.runtime.inprocess import InProcessRuntime
    from tests.conftest import running

    env = {"KEY": "sk-ant-test-key"}
    os.environ.update(env)  # for the clawpen commands
    seen: dict[str, Any] = {"platforms": sorted(plugins())}
    model = FakeModel(api_key=env["KEY"])
    await model.start()
    try:
        bad = _config(work, model.url, {"token": "good", "colour": "blue"})
        try:
            load_settings(bad, env)
        except ClawpenError as exc:
            seen["bad_key"] = str(exc)
        config = _config(work, model.url, {"token": "bad"})
        seen["doctor"] = await _clawpen("doctor", "--config", str(config))
        settings = load_settings(config, env)
        orchestrator = Orchestrator.open(
            settings, runtime=InProcessRuntime(work / "ws"), adapters="in_process"
        )
        async with running(orchestrator):
            adapter = clawpen_throwaway.ADAPTERS[-1]
            said = InboundMessage(
                Address("throwaway", "room-1"),
                "user-1",
                "hello through a new platform",
                "in-1",
                time.time(),
            )
            await adapter.said.put(said)
            async with asyncio.timeout(60):
                answer = await adapter.answers.get()
            seen["answer"] = {"address": asdict(answer.address), "text": answer.text}
            seen["status"] = json.loads(await _clawpen("status", "--json", "--config", str(config)))
    finally:
        await model.close()
    return seen


if __name__ == "__main__":
    Path(sys.argv[1]).mkdir()
    print(json.dumps(asyncio.run(_in_a_fresh_process(Path(sys.argv[1])))))
