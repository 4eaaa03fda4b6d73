"""Run `clawpen` commands as real processes, the way a person (or a crash) would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from clawpen.runtime.image import DEFAULT_TAG
from tests.fakes.fake_telegram import FakeTelegram

CLAWPEN = [sys.executable, "-m", "clawpen"]
# The agent image the tests build and run. Two work trees on one Docker engine would otherwise
# overwrite each other's clawpen-agent:latest; give each its own tag.
TEST_IMAGE = os.environ.get("CLAWPEN_TEST_IMAGE", DEFAULT_TAG)


def write_config(
    path: Path,
    model_url: str,
    telegram: FakeTelegram | None = None,
    chats: tuple[int, ...] = (1001,),
    agent_lines: tuple[str, ...] = (),
    telegram_lines: tuple[str, ...] = (),
    **extra: object,
) -> Path:
    lines = [
        "data_dir: ./data",
        f"image: {extra.pop('image', TEST_IMAGE)}",
        "model:",
        "  name: claude-test",
        f"  base_url: {model_url}",
        "  api_key: env:ANTHROPIC_API_KEY",
        "agents:",
        "  - id: assistant",
        "    system_prompt: You are a test.",
        *(f"    {line}" for line in agent_lines),
        "channels:",
        "  cli: {}",
    ]
    if telegram is not None:
        lines += [
            "  telegram:",
            "    token: env:TELEGRAM_BOT_TOKEN",
            f"    api_base_url: {telegram.url}",
            "    poll_timeout: 1",
            *(f"    {line}" for line in telegram_lines),
            "pairings:",
        ]
        for chat in chats:
            lines += [f"  - channel: telegram:{chat}", "    agent: assistant"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def clawpen(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLAWPEN,
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Orchestrator:
    """`clawpen run` in a child process; its JSON log lines are collected in ``logs``."""

    def __init__(self, config: Path, env: dict[str, str], prefix: tuple[str, ...] = ()) -> None:
        self.config = config
        self.prefix = prefix  # runs `clawpen run` under it (e.g. setpriv with some capabilities)
        self.env = {**os.environ, **env}
        self.logs: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.prefix,
            *CLAWPEN,
            "run",
            "--config",
            str(self.config),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started = len(self.events("orchestrator_started"))
        self._reader = asyncio.create_task(self._read(self.process))
        async with asyncio.timeout(30):
            while len(self.events("orchestrator_started")) == started:
                if self.process.returncode is not None:
                    assert self.process.stderr is not None
                    raise RuntimeError((await self.process.stderr.read()).decode())
                await asyncio.sleep(0.02)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            self.logs.append(json.loads(line))  # every line on stdout is one JSON object

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry["event"] == name]

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None and self._reader is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(30):
            code = await self.process.wait()
            await self._reader
        return code
