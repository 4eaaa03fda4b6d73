"""Files back (``send_file``), end to end in-process: the agent's runtime reads the file and
posts its bytes; the door checks them (the platform's limit, named; a clean name; a media type
from the bytes); the file is committed as a reply and delivered in order with the answer."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.channels.base import files_not_supported
from clawpen.models import OutboundFile
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.tools.files import clean_name, media_type
from clawpen_agent.tools import ToolError, read_for_sending
from tests.conftest import running, settled
from tests.fakes.fake_channel import MemoryChannel

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 200
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n"


def tool(name: str, **args: object) -> str:
    return f"tool: {name} {json.dumps(args)}"


def put(root: Path, name: str, data: bytes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


def build(
    factory: Callable[..., Orchestrator], tmp_path: Path, channel: MemoryChannel, chat: str = "1001"
) -> Orchestrator:
    return factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={channel.name: channel},
        config_channels={"cli": {}, channel.name: {"token": "123:abc"}},
        pairings=[{"channel": f"{channel.name}:{chat}", "agent": "assistant"}],
    )


async def test_a_photo_and_a_pdf_reach_the_chat_in_order_before_the_answer(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    put(tmp_path / "ws" / "assistant", "chart.png", PNG)
    put(tmp_path / "ws" / "assistant" / "out", "form.pdf", PDF)
    channel = MemoryChannel(name="telegram")
    orchestrator = build(orchestrator_factory, tmp_path, channel)
    async with running(orchestrator):
        await channel.push("1001", tool("send_file", path="chart.png", caption="the chart"))
        await settled(orchestrator)
        await channel.push("1001", tool("send_file", path="/workspace/out/form.pdf"))
        await settled(orchestrator)
    photo, _answer, pdf, _second = channel.delivered
    assert isinstance(photo, OutboundFile) and isinstance(pdf, OutboundFile)
    assert (photo.name, photo.media_type, photo.data, photo.caption) == (
        "chart.png",
        "image/png",
        PNG,
        "the chart",
    )
    assert (pdf.name, pdf.media_type, pdf.data) == ("form.pdf", "application/pdf", PDF)
    assert "sent chart.png (image/png, 208 bytes) to telegram:1001" in channel.texts_to("1001")[0]


async def test_a_file_over_the_platforms_limit_is_refused_to_the_agent_naming_it(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    put(tmp_path / "ws" / "assistant", "big.bin", os.urandom(11 * 1024 * 1024))
    channel = MemoryChannel(name="discord")
    chat = "123456789012345678"
    orchestrator = build(orchestrator_factory, tmp_path, channel, chat)
    async with running(orchestrator):
        await channel.push(chat, tool("send_file", path="big.bin"))
        await settled(orchestrator)
    [answer] = channel.texts_to(chat)
    assert "refused (413)" in answer and "over discord's limit of 10 MB per file" in answer
    assert channel.files == []


async def test_a_link_out_of_the_workspace_and_a_fifo_send_nothing(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    workspace = tmp_path / "ws" / "assistant"
    workspace.mkdir(parents=True)
    (workspace / "shadow").symlink_to("/etc/shadow")
    (workspace / "other").symlink_to(tmp_path / "ws" / "bob")
    os.mkfifo(workspace / "pipe")
    channel = MemoryChannel(name="telegram")
    orchestrator = build(orchestrator_factory, tmp_path, channel)
    async with running(orchestrator):
        for path in ("shadow", "other/notes.txt", "pipe", "missing.txt", "../bob/notes.txt"):
            await channel.push("1001", tool("send_file", path=path))
            await settled(orchestrator)
    shadow, other, pipe, missing, up = channel.texts_to("1001")
    assert "'shadow' is outside" in shadow
    assert "'other/notes.txt' is outside" in other
    assert "'pipe' is not a regular file" in pipe
    assert "cannot open 'missing.txt'" in missing
    assert "is outside" in up
    assert channel.files == []


def test_a_two_gigabyte_sparse_file_is_refused_at_the_cap_without_reading_it(
    tmp_path: Path,
) -> None:
    with open(tmp_path / "huge.bin", "wb") as sparse:
        sparse.truncate(2 * 1024**3)
    with pytest.raises(ToolError, match=r"2048\.0 MB, over the limit of 100 MB per file"):
        read_for_sending("huge.bin", str(tmp_path))


def test_names_are_cleaned_and_media_types_come_from_the_bytes() -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("..\\..\\boot.ini") == "boot.ini"
    assert clean_name("...") == "file"
    assert clean_name("a" * 300 + ".csv").endswith(".csv") and len(clean_name("a" * 300)) == 120
    assert media_type("x.png", PNG) == "image/png"
    assert media_type("notes.txt", PNG) == "image/png"  # the bytes win over the name
    assert media_type("x.png", b"<html><script>") == "application/octet-stream"
    assert media_type("page.html", b"<html>") == "application/octet-stream"
    assert media_type("data.csv", b"a,b\n1,2") == "text/csv"
    assert media_type("form.pdf", PDF) == "application/pdf"
    assert media_type("noext", b"\x00\x01") == "application/octet-stream"


async def test_a_hostile_agent_at_its_own_door_sends_nothing(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    """What code the agent was tricked into running may post: a length of 2 GB (refused
    from the head, nothing read), a file while answering no chat, bad query keys."""
    channel = MemoryChannel(name="telegram")
    orchestrator = build(orchestrator_factory, tmp_path, channel)
    async with running(orchestrator):
        door = orchestrator.pool.sessions["assistant"].socket_path
        huge = await raw_post(door, "/v1/files?name=a.bin", b"x" * 10, length=2 * 1024**3)
        idle = await raw_post(door, "/v1/files?name=a.png", PNG)
        unknown = await raw_post(door, "/v1/files?name=a.png&path=/etc/shadow", PNG)
        nameless = await raw_post(door, "/v1/files?name=", PNG)
    assert huge[0] == 413 and b"over the limit of 104857600 bytes" in huge[1]
    assert idle[0] == 403 and b"not answering a chat" in idle[1]
    assert unknown[0] == 400 and b"unknown key 'path'" in unknown[1]
    assert nameless[0] == 400 and b"name is empty" in nameless[1]
    assert channel.files == []


async def raw_post(
    socket: Path, target: str, body: bytes, length: int | None = None
) -> tuple[int, bytes]:
    """One request written by hand, its Content-Length whatever the caller says."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    head = (
        f"POST {target} HTTP/1.1\r\nHost: agent\r\nContent-Length: {length or len(body)}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    writer.write(head.encode() + body)
    status_line = await reader.readline()
    answer = b""
    while not answer.rstrip().endswith(b"}"):  # the head, then the one line of JSON
        chunk = await reader.read(65536)
        if not chunk:
            break
        answer += chunk
    writer.close()
    return int(status_line.split()[1]), answer


async def test_a_file_the_platform_cannot_take_is_said_in_the_chat_never_silence(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    put(tmp_path / "ws" / "assistant", "chart.png", PNG)
    channel = MemoryChannel(name="telegram")
    channel.fail_next("1001", files_not_supported("Telegram"))
    orchestrator = build(orchestrator_factory, tmp_path, channel)
    async with running(orchestrator):
        await channel.push("1001", tool("send_file", path="chart.png"))
        await settled(orchestrator)
    texts = channel.texts_to("1001")
    assert len(texts) == 2
    assert any("sent chart.png" in text for text in texts)  # committed: the agent was told
    assert "I could not send you the file chart.png: files are not supported on Telegram yet" in (
        texts
    )
    assert channel.files == []
