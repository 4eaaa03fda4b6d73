"""`clawpen usage`: tokens and cost per agent and UTC day, read from the store with no
orchestrator running."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

from clawpen.demo.model import FakeModel
from clawpen.store import SQLiteStore


def test_usage_command_shows_tokens_and_cost_per_agent_and_day(
    tmp_path: Any, fake_model: FakeModel, api_key: str
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "model: {name: claude-test, api_key: k}\n"
        "agents: [{id: assistant}, {id: helper}]\n"
    )
    (tmp_path / "data").mkdir()

    async def record() -> None:
        store = SQLiteStore(tmp_path / "data" / "clawpen.db")
        now = time.time()
        await store.record_usage("assistant", "claude-test", 1000, 200, now, 0.006)
        await store.record_usage("assistant", "claude-test", 500, 64, now, 0.5, estimated=True)
        await store.record_usage("helper", "claude-test", 10, 1, now - 86_400 * 30, 0.0)
        await store.close()

    asyncio.run(record())
    shown = subprocess.run(
        [sys.executable, "-m", "clawpen", "usage", "--agent", "assistant", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    header, row = shown.stdout.splitlines()
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert header.split("\t") == ["day", "agent", "model", "calls", "input", "output", "usd"]
    assert row.split("\t") == [
        day,
        "assistant",
        "claude-test",
        "2 (1 estimated)",
        "1500",
        "264",
        "0.5060",
    ]
    unpriced = subprocess.run(
        [sys.executable, "-m", "clawpen", "usage", "--agent", "helper", "--days", "40",
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert unpriced.stdout.splitlines()[1].split("\t")[-1] == "cost unknown"  # not 0.0000


def test_pairings_says_so_when_no_chat_is_paired() -> None:
    from clawpen.cli.views import render_pairings

    assert render_pairings({}, [], 0.0).startswith("no chat is paired: pair one with clawpen pair")
    shown = render_pairings(
        {"telegram:42": "assistant"}, [{"chat": "slack:C1", "expires_at": 600}], 0
    )
    assert shown.splitlines() == [
        "telegram:42\tassistant",
        "slack:C1\t(waiting for approval; its code expires in 10 min)",
    ]
