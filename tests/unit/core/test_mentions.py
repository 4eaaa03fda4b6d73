"""In a group channel the agent hears what mentions it, unless its pairing says everything."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.models import Rejection, Route
from clawpen.runtime.inprocess import InProcessRuntime
from tests.conftest import running, settled
from tests.fakes.fake_channel import MemoryChannel


async def test_group_chatter_is_ignored_mentions_answered_and_a_listening_pairing_hears_all(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, tmp_path: Path
) -> None:
    channel = MemoryChannel(name="telegram")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        pairings=[
            {"channel": "telegram:-100", "agent": "assistant"},
            {"channel": "telegram:-200", "agent": "assistant", "mentions_only": False},
        ],
    )
    async with running(orchestrator):
        chatter = await channel.push("-100", "lunch anyone?", addressed=False)
        asked = await channel.push("-100", "what time is it?", addressed=True)
        heard = await channel.push("-200", "lunch anyone?", addressed=False)
        await channel.wait_sent(2)
        await settled(orchestrator)  # an answer to the chatter would have been sent by now
    assert isinstance(chatter, Rejection) and chatter.ignored
    assert asked == Route("assistant") and heard == Route("assistant")
    assert channel.texts_to("-100") == ["echo: what time is it?"]
    assert channel.texts_to("-200") == ["echo: lunch anyone?"]
    assert len(fake_model.requests) == 2
    with sqlite3.connect(tmp_path / "data" / "clawpen.db") as db:
        stored = [row[0] for row in db.execute("SELECT text FROM messages")]
        strangers = db.execute("SELECT count(*) FROM strangers").fetchone()[0]
    assert "lunch anyone?" in stored and stored.count("lunch anyone?") == 1  # only -200's
    assert strangers == 0
