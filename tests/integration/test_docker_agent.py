"""End to end with real containers: Telegram -> hardened agent container -> shell -> Telegram.

The isolation checks run *inside* the container, through the agent's own shell tool, the way a
compromised agent would try them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import docker
import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.runtime.docker import container_name
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running
from .conftest import DockerOrchestratorFactory

pytestmark = pytest.mark.docker

PROBE = r"""
import json, os, socket
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
def writable(path):
    try:
        open(path, "w").close(); os.unlink(path); return True
    except OSError:
        return False
def can_exec_tmp():
    open("/tmp/x.sh", "w").write("#!/bin/sh\necho hi\n"); os.chmod("/tmp/x.sh", 0o755)
    try:
        os.system("/tmp/x.sh >/dev/null 2>&1") == 0 or 1/0; return True
    except ZeroDivisionError:
        return False
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect(("127.0.0.1", 9)); return True
    except OSError as e:
        return e.strerror
mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
print("PROBE" + json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "root_writable": writable("/probe"), "etc_writable": writable("/etc/probe"),
    "workspace_writable": writable("/workspace/probe"), "tmp_writable": writable("/tmp/probe"),
    "tmp_exec": can_exec_tmp(), "socket_dir_writable": writable("/run/clawpen/probe"),
    "docker_socket": any(os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock")),
    "mounts": mounts, "processes": sorted(
        open(f"/proc/{p}/comm").read().strip() for p in os.listdir("/proc") if p.isdigit()
    ),
}))
"""


def probe_command() -> str:
    encoded = base64.b64encode(PROBE.encode()).decode()
    return f"run: echo {encoded} | base64 -d | python3"


def parse_probe(reply: str) -> dict[str, Any]:
    line = next(x for x in reply.splitlines() if x.startswith("PROBE"))
    data: dict[str, Any] = json.loads(line[len("PROBE") :])
    return data


@pytest.fixture
def docker_orchestrator(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_telegram: FakeTelegram
) -> Orchestrator:
    return docker_orchestrator_factory(fake_telegram)[0]


async def test_telegram_message_runs_shell_in_container_and_reply_comes_back(
    docker_orchestrator: Orchestrator,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
) -> None:
    async with running(docker_orchestrator):
        await fake_telegram.push_text(1001, "run: echo hello-from-$(hostname); id -u")
        await fake_telegram.wait_for_sent(1, timeout=60)
    reply = fake_telegram.texts_to(1001)[0]
    assert "hello-from-" in reply
    assert "10001" in reply
    assert "exit_code: 0" in reply
    # the model saw the tool result: the shell really ran inside the container
    assert any(
        isinstance(m["content"], list) and m["content"][0].get("type") == "tool_result"
        for r in fake_model.requests
        for m in r["messages"]
    )


async def test_container_is_locked_down_from_the_inside(
    docker_orchestrator: Orchestrator,
    fake_telegram: FakeTelegram,
    docker_client: docker.DockerClient,
) -> None:
    async with running(docker_orchestrator):
        await fake_telegram.push_text(1001, probe_command())
        await fake_telegram.wait_for_sent(1, timeout=60)
        name = container_name(instance_id(docker_orchestrator.settings.data_dir), "assistant")
        attrs = docker_client.containers.get(name).attrs
    facts = parse_probe(fake_telegram.texts_to(1001)[0])
    assert facts["uid"] == 10001 and facts["gid"] == 10001
    assert int(facts["cap_eff"], 16) == 0
    assert int(facts["cap_bnd"], 16) == 0
    assert facts["no_new_privs"] == "1"
    assert facts["interfaces"] == ["lo"]
    assert facts["root_writable"] is False and facts["etc_writable"] is False
    assert facts["workspace_writable"] is True and facts["tmp_writable"] is True
    assert facts["tmp_exec"] is False
    assert facts["socket_dir_writable"] is False  # it cannot replace or shadow its own socket
    assert facts["docker_socket"] is False
    # its own pid namespace: docker-init, the agent, the shell running this, and the probe
    assert len(facts["processes"]) <= 5 and "dockerd" not in facts["processes"]
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 256
    binds = [m for m in attrs["Mounts"] if m["Type"] == "bind"]
    data_dir = docker_orchestrator.settings.data_dir
    assert sorted((m["Source"], m["Destination"]) for m in binds) == [
        (str(data_dir / "agents" / "assistant"), "/run/clawpen"),
        (str(data_dir / "workspaces" / "assistant"), "/workspace"),  # its own ext4 image
    ]


async def test_api_key_is_nowhere_inside_the_container(
    docker_orchestrator: Orchestrator,
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    docker_client: docker.DockerClient,
    api_key: str,
) -> None:
    async with running(docker_orchestrator):
        await fake_telegram.push_text(1001, "run: env; cat /proc/self/cmdline")
        await fake_telegram.wait_for_sent(1, timeout=60)
        name = container_name(instance_id(docker_orchestrator.settings.data_dir), "assistant")
        container = docker_client.containers.get(name)
        # As root inside the container: every process's environment and arguments, every file.
        # The pattern brackets one character so that grep's own arguments do not contain the key.
        pattern = f"{api_key[:3]}[{api_key[3]}]{api_key[4:]}"
        search = (
            f"grep -l '{pattern}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null;"
            f" grep -r -l '{pattern}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null;"
            " echo searched"
        )
        found = container.exec_run(["sh", "-c", search], user="root").output.decode()
        attrs = container.attrs
    assert found.strip() == "searched"
    assert api_key not in json.dumps(attrs)
    assert api_key not in fake_telegram.texts_to(1001)[0]
    # ...and yet the model upstream received it from the proxy on every call
    assert fake_model.headers and all(h["x-api-key"] == api_key for h in fake_model.headers)


async def test_cli_chat_reaches_a_container_agent(docker_orchestrator: Orchestrator) -> None:
    async with running(docker_orchestrator):
        assert docker_orchestrator.cli is not None
        reply = await docker_orchestrator.cli.ask("assistant", "run: cat /etc/os-release | head -1")
    assert "PRETTY_NAME" in reply


async def test_agents_cannot_see_each_others_workspace_or_socket(
    docker_orchestrator_factory: DockerOrchestratorFactory, fake_telegram: FakeTelegram
) -> None:
    two_agents = {
        "agents": [{"id": "alice"}, {"id": "bob"}],
        "pairings": [
            {"channel": "telegram:1001", "agent": "alice"},
            {"channel": "telegram:1002", "agent": "bob"},
        ],
    }
    orchestrator, _ = docker_orchestrator_factory(fake_telegram, **two_agents)
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: echo alice-secret > /workspace/secret.txt")
        await fake_telegram.wait_for_sent(1, timeout=60)
        await fake_telegram.push_text(
            1002,
            "run: ls -a /workspace /run/clawpen; grep -rs alice-secret / --exclude-dir=proc"
            " --exclude-dir=sys; echo searched",
        )
        await fake_telegram.wait_for_sent(2, timeout=60)
    bob_sees = fake_telegram.texts_to(1002)[0]
    assert "secret.txt" not in bob_sees
    assert "alice-secret" not in bob_sees
    assert "agent.sock" in bob_sees and "searched" in bob_sees
