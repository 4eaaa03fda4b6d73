"""A hostile agent cannot take the orchestrator down, nor slow another agent.

The attack runs where a prompt injection would run it: inside a real agent container, through
the agent's own shell tool (``hostile.py``, against ``/run/clawpen/agent.sock``). Meanwhile a
second agent, paired with another chat, keeps answering; afterwards the same orchestrator
process answers the attacked agent's chat again, ``clawpen status`` answers, and its file
descriptors and memory stayed bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from .procs import Orchestrator, clawpen

pytestmark = pytest.mark.docker

MALLORY, BOB = 1001, 1002  # the attacked agent's chat, the bystander's
CONFIG = """\
data_dir: ./data
image: {image}
model:
  name: claude-test
  base_url: {model_url}
  api_key: env:ANTHROPIC_API_KEY
agents:
  - id: mallory
    warm: true
  - id: bob
    warm: true
channels:
  cli: {{}}
  telegram:
    token: env:TELEGRAM_BOT_TOKEN
    api_base_url: {telegram_url}
    poll_timeout: 1
pairings:
  - channel: telegram:{mallory}
    agent: mallory
  - channel: telegram:{bob}
    agent: bob
"""


def hostile_command() -> str:
    script = (Path(__file__).parent / "hostile.py").read_bytes()
    return f"run: echo {base64.b64encode(script).decode()} | base64 -d | python3 -"


@dataclass
class Footprint:
    """The orchestrator's open file descriptors and resident memory, sampled from /proc."""

    pid: int
    samples: list[tuple[int, int]] = field(default_factory=list)  # (fds, rss in KiB)

    def take(self) -> tuple[int, int]:
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        sample = (fds, int(match.group(1)))
        self.samples.append(sample)
        return sample

    async def follow(self, every: float = 0.1) -> None:
        while True:
            self.take()
            await asyncio.sleep(every)


async def ask(telegram: FakeTelegram, chat: int, text: str, timeout: float = 60) -> float:
    """Send ``text`` and wait for the first message back; returns the seconds it took."""
    before = len(telegram.texts_to(chat))
    started = time.monotonic()
    await telegram.push_text(chat, text)
    async with asyncio.timeout(timeout):
        while len(telegram.texts_to(chat)) == before:
            await asyncio.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
async def orchestrator(
    tmp_path: Path,
    fake_model: FakeModel,
    fake_telegram: FakeTelegram,
    api_key: str,
    agent_image: str,
    cleanup_instance: list[str],
) -> AsyncIterator[Orchestrator]:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        CONFIG.format(
            image=agent_image,
            model_url=fake_model.url,
            telegram_url=fake_telegram.url,
            mallory=MALLORY,
            bob=BOB,
        )
    )
    cleanup_instance.append(instance_id(tmp_path / "data"))
    process = Orchestrator(
        config, {"ANTHROPIC_API_KEY": api_key, "TELEGRAM_BOT_TOKEN": fake_telegram.token}
    )
    await process.start()
    yield process
    await process.stop()


def refusal_reasons(logs: list[dict[str, Any]], agent: str) -> set[str]:
    return {
        e["reason"]
        for e in logs
        if e["event"] == "agent_request_refused" and e.get("agentId") == agent
    }


async def test_hostile_agent_neither_crashes_the_orchestrator_nor_slows_another_agent(
    orchestrator: Orchestrator, fake_telegram: FakeTelegram
) -> None:
    assert orchestrator.process is not None
    pid = orchestrator.process.pid
    # Both agents answer once (warm), then bob's usual time is measured.
    await ask(fake_telegram, MALLORY, "hello")
    await ask(fake_telegram, BOB, "hello")
    baseline = [await ask(fake_telegram, BOB, f"ping {i}") for i in range(8)]
    footprint = Footprint(pid)
    fds_before, rss_before = footprint.take()

    # The attack, and bob answering all the while.
    follow = asyncio.create_task(footprint.follow())
    replies_before = len(fake_telegram.texts_to(MALLORY))
    await fake_telegram.push_text(MALLORY, hostile_command())
    during: list[float] = []
    async with asyncio.timeout(150):
        while len(fake_telegram.texts_to(MALLORY)) == replies_before:
            during.append(await ask(fake_telegram, BOB, f"still there? {len(during)}"))
    follow.cancel()
    reply = "".join(fake_telegram.texts_to(MALLORY)[replies_before:])
    line = next(x for x in reply.splitlines() if x.startswith("HOSTILE"))
    seen: dict[str, Any] = json.loads(line.removeprefix("HOSTILE"))

    # The same process answers the attacked agent's chat again, and the admin socket.
    assert await ask(fake_telegram, MALLORY, "are you all right?") < 30
    assert fake_telegram.texts_to(MALLORY)[-1] == "echo: are you all right?"
    code, out, _ = await clawpen("status", "--config", str(orchestrator.config), timeout=30)
    assert code == 0 and set(json.loads(out)["agents"]) == {"mallory", "bob"}
    assert orchestrator.process.returncode is None and orchestrator.process.pid == pid
    await asyncio.sleep(1)
    fds_after, rss_after = footprint.take()
    fds_most = max(fds for fds, _ in footprint.samples)
    rss_most = max(rss for _, rss in footprint.samples)
    print(
        f"bob's answer: baseline median {statistics.median(baseline):.3f}s"
        f" max {max(baseline):.3f}s; under attack median {statistics.median(during):.3f}s"
        f" max {max(during):.3f}s ({len(during)} answers);"
        f" orchestrator fds {fds_before} -> most {fds_most} -> {fds_after};"
        f" RSS {rss_before // 1024} MiB -> most {rss_most // 1024} MiB -> {rss_after // 1024} MiB;"
        f" hostile saw {json.dumps(seen)}"
    )

    # Every hostile input was refused, each in its own way.
    malformed = [
        "text_a_number",
        "text_a_list",
        "raw_lone_surrogate",
        "escaped_lone_surrogate",
        "nul",
        "tool_calls_negative",
        "extra_nested",
        "not_json",
        "nan",
        "task_id_not_a_number",
    ]
    assert {name: seen[name] for name in malformed} == dict.fromkeys(malformed, 400)
    assert seen["result_50MiB"][0] == 413 and seen["result_50MiB"][1] < 2  # before reading
    assert seen["messages_1GiB"][0] == 413 and seen["messages_1GiB"][1] < 2
    assert seen["chunked_endless"] == 411
    for head in ("garbage", "tls_hello", "nul_bytes", "too_many_headers", "long_header"):
        assert seen[head] == 400, head
    assert seen["long_request_line"] == 400
    assert len(seen["giant_bodies"]) >= 5 and set(seen["giant_bodies"]) == {403}  # parsed
    assert seen["too_many_values"] == 400
    assert seen["over_budget"] == 429 and seen["hogs"] == [408, 408]
    assert seen["slow_body"][0] == 408 and seen["slow_body"][1] < 15
    assert 3 < seen["slowloris_cut_after"] < 10
    assert seen["silent_closed"][0] == "closed" and seen["silent_closed"][1] < 10
    flood = seen["flood"]
    assert flood["opened"] == min(3000, flood["nofile"] - 100) and flood["connect_failed"] == 0
    assert flood["held"] <= 64 and flood["turned_away_503"] >= flood["opened"] - 64
    assert flood["still_open_after_deadline"] == 0
    reasons = refusal_reasons(orchestrator.logs, "mallory")
    assert reasons >= {
        "invalid_result",
        "invalid_body",
        "bad_task_id",
        "body_too_large",
        "length_required",
        "malformed_request",
        "request_head_too_large",
        "body_timeout",
        "body_budget_exhausted",
        "too_many_connections",
        "incomplete_request",
        "no_request",
    }
    assert refusal_reasons(orchestrator.logs, "bob") == set()
    refused = [e for e in orchestrator.logs if e["event"] == "agent_request_refused"]
    assert len(refused) < 1000  # rate-limited: thousands of refusals, a few lines a second
    assert not [e for e in orchestrator.logs if e.get("level") in ("error", "critical")]

    # Bob kept his usual pace, and the orchestrator's footprint stayed bounded.
    assert len(during) >= 10
    usual = statistics.median(baseline)
    assert statistics.median(during) < 3 * usual + 0.3
    assert max(during) < max(baseline) + 2.0
    assert fds_most < fds_before + 300  # not 20,000: 64 held, and a few passing through
    assert fds_after < fds_before + 20
    assert rss_most < rss_before + 300 * 1024  # KiB: not the 1.3 GB the issue saw
    assert rss_after < rss_before + 200 * 1024
