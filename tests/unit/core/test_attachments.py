"""Files users send reach the agent's inbox, and images reach the model as image blocks."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from clawpen.app import Orchestrator
from clawpen.core.inbox import inbox_name, with_files
from clawpen.demo.model import FakeModel
from clawpen.models import Attachment, TaskFile
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen_agent.inbox import save_files, user_content
from clawpen_agent.protocol import ChatLine, InboxFile
from tests.conftest import running, settled
from tests.fakes.fake_channel import MemoryChannel

# a real 1x1 PNG: the model API would refuse a fake one
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def test_inbox_names_are_plain_unique_and_readable() -> None:
    assert inbox_name("1700.0001", 0, "holiday photo.JPG") == "1700.0001-0-holiday_photo.JPG"
    assert inbox_name("42", 1, "../../etc/passwd") == "42-1-etc_passwd"
    assert inbox_name("42", 0, "...") == "42-0-file"
    assert "/" not in inbox_name("a/b", 0, "c/d")


def test_each_line_names_the_files_its_message_brought() -> None:
    lines = [ChatLine("ann", "look"), ChatLine("ann", "and this")]
    files = [TaskFile("m2", "a.png", "image/png", PNG), TaskFile("m2", "b.txt", "text/plain", b"x")]
    annotated, inbox = with_files(lines, ["m1", "m2"], files)
    assert annotated[0].text == "look"
    assert "/workspace/inbox/m2-0-a.png (image/png" in annotated[1].text
    assert "/workspace/inbox/m2-1-b.txt (text/plain" in annotated[1].text
    assert [f.name for f in inbox] == ["m2-0-a.png", "m2-1-b.txt"]
    assert base64.b64decode(inbox[0].data) == PNG


def test_the_agent_saves_files_whole_and_refuses_a_name_that_climbs(tmp_path: Path) -> None:
    encoded = base64.b64encode(PNG).decode()
    saved = save_files(
        [InboxFile("1-0-a.png", "image/png", encoded), InboxFile("../evil", "text/plain", "eA==")],
        str(tmp_path),
    )
    assert [s.path.name for s in saved] == ["1-0-a.png"]
    assert (tmp_path / "inbox" / "1-0-a.png").read_bytes() == PNG
    assert not (tmp_path / "evil").exists()
    assert list((tmp_path / "inbox").iterdir()) == [tmp_path / "inbox" / "1-0-a.png"]


def test_images_and_pdfs_become_blocks_other_files_only_their_name(tmp_path: Path) -> None:
    files = [
        InboxFile("a.png", "image/png", base64.b64encode(PNG).decode()),
        InboxFile("b.pdf", "application/pdf", base64.b64encode(b"%PDF-1.4").decode()),
        InboxFile("c.zip", "application/zip", base64.b64encode(b"PK").decode()),
    ]
    content = user_content("see", save_files(files, str(tmp_path)))
    assert isinstance(content, list)
    assert [b["type"] for b in content] == ["text", "image", "document"]
    assert user_content("plain", []) == "plain"


async def test_an_image_sent_in_a_chat_reaches_the_model_and_the_workspace(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, tmp_path: Path
) -> None:
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}
    )
    async with running(orchestrator):
        await channel.push(
            "assistant",
            "what is in this picture?",
            platform_id="m1",
            attachments=(Attachment("cat.png", "image/png", PNG),),
        )
        await channel.wait_sent(1)
        # the same message again (a platform's redelivery): answered once, file stored once
        await channel.push(
            "assistant",
            "what is in this picture?",
            platform_id="m1",
            attachments=(Attachment("cat.png", "image/png", PNG),),
        )
        await channel.push("assistant", "and now?", platform_id="m2")
        await channel.wait_sent(2)
        await settled(orchestrator)  # a third answer would have been sent by now
    reply = channel.texts_to("assistant")[0]
    assert f"[image: image/png, sha256 {digest(PNG)}]" in reply
    assert "/workspace/inbox/m1-0-cat.png (image/png" in reply
    assert len(channel.sent) == 2
    # the later turn does not send the image again: history keeps the text naming the file
    later = fake_model.requests[-1]["messages"]
    assert all(isinstance(m["content"], str) or m["role"] != "user" for m in later[:-1])
    assert "m1-0-cat.png" in str(later)
    assert (tmp_path / "ws" / "assistant" / "inbox" / "m1-0-cat.png").read_bytes() == PNG
    with sqlite3.connect(tmp_path / "data" / "clawpen.db") as db:
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 0  # kept until answered


async def test_a_file_without_text_is_answered_not_refused(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"), channels={"cli": channel}
    )
    async with running(orchestrator):
        await channel.push(
            "assistant", "", attachments=(Attachment("r.pdf", "application/pdf", b"%PDF"),)
        )
        await channel.wait_sent(1)
    assert (
        f"[document: application/pdf, sha256 {digest(b'%PDF')}]" in channel.texts_to("assistant")[0]
    )
