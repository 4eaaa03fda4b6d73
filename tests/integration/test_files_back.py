"""Files back from a real container: the agent's runtime reads the file inside the container
and posts its bytes; Telegram gets a photo as a photo and a PDF as a document (python-telegram-bot
against the fake Bot API); a link out of the workspace or a 2 GB sparse file sends nothing; a
``kill -9`` between the file's commit and its delivery delivers it once."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

import pytest

from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from ..conftest import running, settled
from .conftest import DockerOrchestratorFactory
from .procs import Orchestrator, write_config

pytestmark = pytest.mark.docker

# a 1x1 PNG, written inside the container by the agent's shell
MAKE_PNG = (
    "run: python3 -c \"import base64,pathlib; pathlib.Path('chart.png').write_bytes(base64."
    "b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAA"
    "AABJRU5ErkJggg=='))\""
)
MAKE_PDF = "run: printf '%s\\n' '%PDF-1.4' '1 0 obj <<>> endobj' '%%EOF' > report.pdf"


def tool(name: str, **args: object) -> str:
    return f"tool: {name} {json.dumps(args)}"


async def test_a_photo_and_a_pdf_from_the_container_reach_telegram_the_way_users_expect(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_telegram: FakeTelegram
) -> None:
    orchestrator, _ = docker_orchestrator_factory(fake_telegram)
    async with running(orchestrator):
        for answered, text in enumerate(
            (
                MAKE_PNG,
                MAKE_PDF,
                tool("send_file", path="chart.png", caption="your chart"),
                tool("send_file", path="/workspace/report.pdf"),
            ),
            start=1,
        ):
            await fake_telegram.push_text(1001, text)
            await fake_telegram.wait_for_sent(answered, timeout=90)
    photo, document = fake_telegram.uploads
    assert (photo["method"], photo["name"], photo["caption"]) == (
        "sendPhoto",
        "chart.png",
        "your chart",
    )
    assert photo["data"].startswith(b"\x89PNG\r\n\x1a\n")
    assert (document["method"], document["name"]) == ("sendDocument", "report.pdf")
    assert document["data"] == b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n"
    assert document["content_type"] == "application/pdf"


async def test_links_out_of_the_container_and_a_sparse_2_gb_file_send_nothing(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_telegram: FakeTelegram
) -> None:
    """The host never opens the path: a link to /etc/shadow resolves inside the container (to
    its own, unreadable, file, outside /workspace anyway); one to another agent's workspace
    names a path that does not exist in this container."""
    orchestrator, _ = docker_orchestrator_factory(
        fake_telegram, agents=[{"id": "assistant"}, {"id": "bob"}]
    )
    bob = orchestrator.settings.data_dir / "workspaces" / "bob"
    async with running(orchestrator):
        for answered, text in enumerate(
            (
                "run: ln -s /etc/shadow shadow; ln -s ../bob bob; truncate -s 2G huge.bin",
                tool("send_file", path="shadow"),
                tool("send_file", path="bob/notes.txt"),
                tool("send_file", path=f"{bob}/notes.txt"),
                tool("send_file", path="huge.bin"),
            ),
            start=1,
        ):
            await fake_telegram.push_text(1001, text)
            await fake_telegram.wait_for_sent(answered, timeout=90)
        await settled(orchestrator)
    _, shadow, other, absolute, huge = fake_telegram.texts_to(1001)
    assert "'shadow' is outside /workspace" in shadow
    assert "cannot open 'bob/notes.txt'" in other or "is outside" in other
    assert "is outside /workspace" in absolute
    assert "2048.0 MB, over the limit of 100 MB per file" in huge
    assert fake_telegram.uploads == []
    assert "sendDocument" not in fake_telegram.calls and "sendPhoto" not in fake_telegram.calls


async def test_kill_9_between_the_files_commit_and_its_delivery_delivers_it_once(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
) -> None:
    config = write_config(tmp_path / "clawpen.yaml", fake_model.url, fake_telegram)
    cleanup_instance.append(instance_id(tmp_path / "data"))
    env = {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    orchestrator = Orchestrator(config, env)
    await orchestrator.start()
    await fake_telegram.push_text(1001, MAKE_PDF)
    await fake_telegram.wait_for_sent(1, timeout=90)
    fake_telegram.fail_next("sendDocument", 500, times=1_000)  # committed, not yet delivered
    await fake_telegram.push_text(1001, tool("send_file", path="report.pdf"))
    await until(lambda: orchestrator.events("agent_file_sent"), timeout=90, what="the commit")
    await until(lambda: "sendDocument" in fake_telegram.calls, what="a first try at sending it")
    assert await orchestrator.stop(signal.SIGKILL) == -signal.SIGKILL
    fake_telegram.failures.clear()
    await orchestrator.start()
    await fake_telegram.wait_for_uploads(1, timeout=90)
    await fake_telegram.wait_for_sent(2, timeout=90)  # the answer, after the file
    # the first answer, the file and the second answer, each recorded as sent
    await until(lambda: len(orchestrator.events("reply_sent")) >= 3, what="all recorded")
    assert await orchestrator.stop() == 0
    database = tmp_path / "data" / "clawpen.db"
    pending = await asyncio.to_thread(_pending_replies, database)
    print(
        "EVENTS",
        [
            (e["event"], e.get("taskId"), e.get("file"))
            for e in orchestrator.logs
            if "reply" in e["event"] or "task" in e["event"] or "orchestrator" in e["event"]
        ],
    )
    assert pending == 0  # nothing left to send: whatever was to go, went
    [upload] = fake_telegram.uploads
    assert (upload["method"], upload["name"]) == ("sendDocument", "report.pdf")
    assert "sent report.pdf" in fake_telegram.texts_to(1001)[1]


def _pending_replies(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM replies WHERE status='pending'").fetchone()[0])
