"""A compromised agent attacks the model proxy from inside its real container, with its own
shell: 40 parallel calls, each asking for a billion output tokens. The budget holds."""

from __future__ import annotations

import base64
import json

import pytest

from clawpen.demo.model import FakeModel

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

BUDGET = 200_000

# Standard library only: what an agent (or a prompt injection in it) has at hand.
ATTACK = r"""
import http.client, json, socket, threading
class Door(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/run/clawpen/agent.sock")
body = json.dumps({"model": "claude-test", "max_tokens": 1000000000,
                   "messages": [{"role": "user", "content": "x" * 100000}]})
statuses = []
def call():
    door = Door("agent", timeout=60)
    door.request("POST", "/v1/messages", body, {"content-type": "application/json"})
    statuses.append(door.getresponse().status)
threads = [threading.Thread(target=call) for _ in range(40)]
[t.start() for t in threads]; [t.join() for t in threads]
print("ATTACK" + json.dumps(sorted(statuses)))
"""


async def test_parallel_calls_with_a_huge_max_tokens_from_inside_a_container_cannot_overspend(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_model: FakeModel, api_key: str
) -> None:
    orchestrator, _ = docker_orchestrator_factory(
        model={
            "name": "claude-test",
            "base_url": fake_model.url,
            "api_key": api_key,
            "daily_token_budget": BUDGET,
        },
        agents=[{"id": "assistant", "max_model_calls": 64}],
    )
    command = f"run: echo {base64.b64encode(ATTACK.encode()).decode()} | base64 -d | python3"
    async with running(orchestrator):
        assert orchestrator.cli is not None
        reply = await orchestrator.cli.ask("assistant", command)
        spent = await orchestrator.store.tokens_used_since("assistant", 0)
    line = next(x for x in reply.splitlines() if x.startswith("ATTACK"))
    statuses = json.loads(line[len("ATTACK") :])
    assert len(statuses) == 40
    assert statuses.count(403) >= 30  # refused: the budget was reserved by the calls before
    assert spent <= BUDGET  # the agent's own turn and the attack together
    attack_calls = [r for r in fake_model.requests if r["messages"][0]["content"] == "x" * 100000]
    assert attack_calls and all(r["max_tokens"] == 4096 for r in attack_calls)  # clamped
