"""`clawpen chat` gets a file back as a path under data_dir, printed with the answer."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from clawpen.channels.base import SendError
from clawpen.channels.cli import CliChannel
from clawpen.models import Address, InboundMessage, OutboundFile, OutboundMessage, Route
from tests.waiting import until


async def test_a_file_is_written_under_data_dir_and_its_path_comes_with_the_answer(
    tmp_path: Path,
) -> None:
    channel = CliChannel(files_dir=tmp_path / "files" / "cli")
    asked: list[InboundMessage] = []

    async def accept(message: InboundMessage) -> Route:
        asked.append(message)
        return Route("assistant")

    runner = asyncio.create_task(channel.run(accept))
    answer = asyncio.create_task(channel.ask("assistant", "draw it", session="s1"))
    await until(lambda: asked, what="the question committed")
    address = asked[0].address
    await channel.send_file(OutboundFile(address, "chart.png", "image/png", b"png!", "here"))
    await channel.send(OutboundMessage(address, "done"))
    text = await answer
    runner.cancel()

    line, last = text.splitlines()
    assert last == "done"
    path = Path(line.removeprefix("[file ").split(": ")[0])
    assert path.parent == tmp_path / "files" / "cli" / "assistant"
    assert path.name.endswith("-chart.png") and line.endswith(": here]")
    assert_private_file(path, b"png!")


def assert_private_file(path: Path, data: bytes) -> None:
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_file_for_a_session_nobody_waits_on_fails_for_good(tmp_path: Path) -> None:
    channel = CliChannel(files_dir=tmp_path)
    file = OutboundFile(Address("cli", "assistant", "gone"), "a.txt", "text/plain", b"x")
    with pytest.raises(SendError) as failed:
        await channel.send_file(file)
    assert failed.value.permanent
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (a test's one look)
