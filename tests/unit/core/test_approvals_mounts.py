"""Staged writes to a read-write mount: after the task, a card lists the changed files; Allow
applies them to the host folder, Deny throws them away. (The agent's writes are played here on
its copy; ``tests/integration/test_approvals.py`` has a container make them.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clawpen.app import Orchestrator
from clawpen.runtime import staging
from tests.conftest import running, settled
from tests.fakes.fake_telegram import FakeTelegram

from .test_approvals import OWNER, button, first_card


@pytest.mark.parametrize("choice", ["Allow", "Deny"])
async def test_a_staged_write_is_applied_only_after_allow_and_discarded_on_deny(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    tmp_path: Path,
    choice: str,
) -> None:
    host = tmp_path / "notes"
    host.mkdir()
    (host / "todo.md").write_text("- milk\n")
    agents: list[dict[str, Any]] = [
        {
            "id": "assistant",
            "mounts": [{"host": str(host), "container": "/mnt/notes", "read_only": False}],
            "approvals": {"ask": ["mounts"]},
        }
    ]
    orchestrator = orchestrator_factory(telegram=fake_telegram, agents=agents)
    staged = staging.prepare(
        host, staging.staging_dir(orchestrator.settings.data_dir, "assistant", "/mnt/notes"), None
    )
    (staged / "todo.md").write_text("- milk\n- eggs\n")  # what the agent wrote in its copy
    (staged / "new.md").write_text("hello\n")
    async with running(orchestrator):
        await fake_telegram.push_text(OWNER, "hi")
        card = await first_card(fake_telegram)
        assert "write 2 file(s) to" in card["text"]
        assert "changed todo.md (+1 -0 lines)" in card["text"]
        assert "added new.md (+1 -0 lines)" in card["text"]
        assert (host / "todo.md").read_text() == "- milk\n"  # nothing before the tap
        query = await fake_telegram.push_tap(OWNER, card["message_id"], button(card, choice), OWNER)
        await fake_telegram.wait_for_answer(query)
        await fake_telegram.wait_for_sent(2)
        await settled(orchestrator)
    reply = fake_telegram.texts_to(OWNER)[-1]
    if choice == "Allow":
        assert "/mnt/notes: 2 change(s) applied" in reply
        assert (host / "todo.md").read_text() == "- milk\n- eggs\n"
        assert (host / "new.md").read_text() == "hello\n"
    else:
        assert "/mnt/notes: changes denied by telegram:1001; thrown away" in reply
        assert (host / "todo.md").read_text() == "- milk\n"
        assert not (host / "new.md").exists()
        assert (staged / "todo.md").read_text() == "- milk\n"  # the copy is the folder again
        assert not (staged / "new.md").exists()
