"""What an operator runs against a live orchestrator, as a separate process: strangers' chats
are listed for pairing, `status` is JSON for scripts, and `agents reset` asks before it empties a
workspace."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from clawpen.app import Orchestrator
from tests.fakes.fake_telegram import FakeTelegram

from ...conftest import running


async def clawpen(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clawpen",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin)
    return process.returncode or 0, out.decode(), err.decode()


def cli_config(tmp_path: Path) -> str:
    config = tmp_path / "clawpen.yaml"
    config.write_text("data_dir: ./data\nagents:\n  - id: assistant\n")
    return str(config)


async def test_pending_pairings_list_the_chats_that_wrote(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    tmp_path: Path,
) -> None:
    orchestrator = orchestrator_factory(telegram=fake_telegram)
    async with running(orchestrator):
        await fake_telegram.push_text(4242, "hello? who is this")
        await fake_telegram.push_text(1001, "paired")
        await fake_telegram.wait_for_sent(1)
        code, out, err = await clawpen("pairings", "--pending", "--config", cli_config(tmp_path))
    assert code == 0, err
    assert "telegram:4242\t1 message(s)" in out
    assert "pair it: clawpen pair telegram:4242 assistant" in out
    assert "hello?" not in out  # who and when, never what


async def test_status_is_json_for_scripts_and_reset_empties_a_workspace(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator = orchestrator_factory()
    config = cli_config(tmp_path)
    async with running(orchestrator):
        assert orchestrator.cli is not None
        await orchestrator.cli.ask("assistant", "run: echo kept > /workspace/note || true")
        workspace = tmp_path / "ws" / "assistant"
        (workspace / "note.txt").write_text("to be wiped")
        code, out, err = await clawpen("agents", "reset", "assistant", "--config", config)
        assert code != 0  # no "y" typed: nothing happens
        assert (workspace / "note.txt").exists()
        code, out, err = await clawpen(
            "agents", "reset", "assistant", "--config", config, stdin=b"y\n"
        )
        assert code == 0, err
        assert not (workspace / "note.txt").exists()
        code, out, err = await clawpen("status", "--json", "--config", config)
    assert code == 0, err
    assert '"spend_today_usd"' in out and '"disk"' in out
