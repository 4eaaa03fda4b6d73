"""A skill end to end in a real container: its folder mounted read-only through the mount
allowlist at /mnt/skills/NAME, its name and description (only) in the model's system prompt,
and its script run by the agent; without the allowlist's grant the agent does not start."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from clawpen.runtime.docker import DockerRuntime
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from ..conftest import running

pytestmark = pytest.mark.docker

BODY = "To greet, run scripts/hello.sh NAME. BODY-ONLY-TEXT"


def make_skill(root: Path) -> Path:
    folder = root / "skills" / "greeter"
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(
        f"---\nname: greeter\ndescription: Greets people warmly.\n---\n\n{BODY}\n"
    )
    script = folder / "scripts" / "hello.sh"
    script.write_text('#!/bin/sh\necho "hello, $1, from the greeter skill"\n')
    script.chmod(0o755)
    return folder


async def test_the_agent_runs_a_skills_script_and_the_model_sees_only_its_summary(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    fake_model: FakeModel,
    docker_client: docker.DockerClient,
    agent_image: str,
    cleanup_instance: list[str],
    tmp_path: Path,
) -> None:
    folder = make_skill(tmp_path)
    allowlist = tmp_path / "operator" / "mount-allowlist.yaml"
    allowlist.parent.mkdir()
    allowlist.write_text(json.dumps({"allowed": [{"path": str(folder.parent)}]}))
    instance = instance_id(tmp_path / "data")
    cleanup_instance.append(instance)
    runtime = DockerRuntime(docker_client, instance, tmp_path / "data", allowlist=allowlist)
    orchestrator = orchestrator_factory(
        runtime,
        fake_telegram,
        image=agent_image,
        agents=[{"id": "assistant", "skills": [str(folder)]}],
    )
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: sh /mnt/skills/greeter/scripts/hello.sh Ada")
        await fake_telegram.wait_for_sent(1, timeout=90)
        await fake_telegram.push_text(
            1001, "run: touch /mnt/skills/greeter/planted; cat /mnt/skills/greeter/SKILL.md"
        )
        await fake_telegram.wait_for_sent(2, timeout=90)
    ran, tried = fake_telegram.texts_to(1001)
    assert "hello, Ada, from the greeter skill" in ran
    assert "Read-only file system" in tried and BODY in tried  # readable, not writable
    assert not (folder / "planted").exists()
    system = str(fake_model.requests[0]["system"])
    assert "- greeter: Greets people warmly. (/mnt/skills/greeter/SKILL.md)" in system
    assert "BODY-ONLY-TEXT" not in str(fake_model.requests[0])


async def test_a_skill_outside_the_allowlist_is_not_mounted_and_the_user_is_told(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    docker_client: docker.DockerClient,
    agent_image: str,
    cleanup_instance: list[str],
    tmp_path: Path,
) -> None:
    folder = make_skill(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    allowlist = tmp_path / "operator" / "mount-allowlist.yaml"
    allowlist.parent.mkdir()
    allowlist.write_text(json.dumps({"allowed": [{"path": str(tmp_path / "elsewhere")}]}))
    instance = instance_id(tmp_path / "data")
    cleanup_instance.append(instance)
    runtime = DockerRuntime(docker_client, instance, tmp_path / "data", allowlist=allowlist)
    orchestrator = orchestrator_factory(
        runtime,
        fake_telegram,
        image=agent_image,
        agents=[{"id": "assistant", "skills": [str(folder)]}],
    )
    async with running(orchestrator):
        await fake_telegram.push_text(1001, "run: ls /mnt/skills")
        await fake_telegram.wait_for_sent(1, timeout=90)
    [answer] = fake_telegram.texts_to(1001)
    assert f"mount {folder} -> /mnt/skills/greeter refused" in answer
    assert "not under any folder of the mount allowlist" in answer
