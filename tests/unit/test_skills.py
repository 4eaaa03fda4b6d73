"""Skills in the SKILL.md format: accepted as written, a malformed one a config error naming
its file and its field, and only names and descriptions in the system prompt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.config import load_settings
from clawpen.demo.model import FakeModel
from clawpen.errors import ConfigError
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.runtime.mounts import MountRequest
from clawpen.runtime.pool import agent_spec
from tests.conftest import running
from tests.fakes.fake_channel import MemoryChannel

BODY = "Run scripts/fill.py FORM.pdf to fill a form. SECRET-INSTRUCTION-BODY"


def skill(root: Path, folder: str, text: str) -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "SKILL.md").write_text(text)
    return path


def good(root: Path, name: str = "pdf-tools") -> Path:
    return skill(
        root,
        name,
        f"---\nname: {name}\ndescription: Fill in and merge PDF forms.\n---\n\n{BODY}\n",
    )


def config(tmp_path: Path, *folders: str) -> Path:
    listed = "".join(f"\n      - {folder}" for folder in folders)
    path = tmp_path / "clawpen.yaml"
    path.write_text(
        "data_dir: ./data\n"
        "model: {name: claude-test, api_key: k}\n"
        f"agents:\n  - id: assistant\n    skills:{listed}\n"
    )
    return path


def test_skills_are_accepted_as_the_issue_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    good(tmp_path / "skills")
    settings = load_settings(config(tmp_path, "~/skills/pdf-tools"), {})
    spec = agent_spec(settings, settings.agent("assistant"))
    assert MountRequest(str(tmp_path / "skills" / "pdf-tools"), "/mnt/skills/pdf-tools") in (
        spec.mounts
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no front matter\n", "no front matter"),
        ("---\nname: x\n", "not closed"),
        ("---\ndescription: d\n---\n", "field 'name' is missing"),
        ("---\nname: pdf-tools\n---\nbody", "field 'description' is missing"),
        ("---\nname: PDF Tools\ndescription: d\n---\n", "field 'name' must be lowercase"),
        ("---\nname: [a\ndescription: d\n---\n", "the front matter is not YAML"),
        ("---\n- a list\n---\n", "must be a mapping"),
    ],
)
def test_a_malformed_skill_is_one_config_error_naming_the_file_and_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    folder = skill(tmp_path, "broken", text)
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path, str(folder)), {})
    message = str(error.value)
    assert "\n" not in message
    assert f"{folder / 'SKILL.md'}: " in message and problem in message
    assert "agents.0.skills" in message


def test_a_missing_skill_folder_and_two_of_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SKILL\.md: no such file"):
        load_settings(config(tmp_path, str(tmp_path / "nowhere")), {})
    one, two = good(tmp_path / "a"), good(tmp_path / "b")
    with pytest.raises(ConfigError, match="two skills are named 'pdf-tools'"):
        load_settings(config(tmp_path, str(one), str(two)), {})


async def test_the_model_sees_only_each_skills_name_description_and_place(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, tmp_path: Path
) -> None:
    folder = good(tmp_path / "skills")
    channel = MemoryChannel(name="cli")
    orchestrator = orchestrator_factory(
        InProcessRuntime(tmp_path / "ws"),
        channels={"cli": channel},
        agents=[{"id": "assistant", "system_prompt": "You help.", "skills": [str(folder)]}],
    )
    async with running(orchestrator):
        await channel.push("assistant", "hello")
        await channel.wait_sent(1)
    system = str(fake_model.requests[-1]["system"])
    assert "You help." in system
    assert "- pdf-tools: Fill in and merge PDF forms. (/mnt/skills/pdf-tools/SKILL.md)" in system
    assert "SECRET-INSTRUCTION-BODY" not in str(fake_model.requests)


def test_mcp_servers_are_accepted_as_the_issue_writes_them_and_mistakes_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clawpen.yaml"
    base = "data_dir: ./data\nmodel: {name: claude-test, api_key: k}\nagents:\n  - id: assistant\n"
    path.write_text(
        base + "    mcp_servers:\n"
        "      - {name: files, command: [npx, -y, server-files], env: {ROOT: /workspace}}\n"
        "      - name: github\n"
        "        url: https://api.example.com/mcp\n"
        "        headers: {Authorization: env:GH_TOKEN}\n"
    )
    settings = load_settings(path, {"GH_TOKEN": "Bearer gh-123"})
    stdio, remote = settings.agent("assistant").mcp_servers
    assert (stdio.command, stdio.env, stdio.remote) == (
        ["npx", "-y", "server-files"],
        {"ROOT": "/workspace"},
        False,
    )
    assert (remote.url, remote.headers, remote.remote) == (
        "https://api.example.com/mcp",
        {"Authorization": "Bearer gh-123"},
        True,
    )
    assert "gh-123" not in repr(settings)
    for servers, problem in (
        ("[{name: x}]", "give either command"),
        ("[{name: x, command: [a], url: 'http://h/'}]", "give either command"),
        ("[{name: x, command: [a], headers: {A: b}}]", "headers are for a remote"),
        ("[{name: Bad Name, command: [a]}]", "name"),
        ("[{name: clawpen, command: [a]}]", "clawpen's own"),
        ("[{name: x, command: [a]}, {name: x, url: 'http://h/'}]", "two mcp servers"),
    ):
        path.write_text(base + f"    mcp_servers: {servers}\n")
        with pytest.raises(ConfigError, match=problem):
            load_settings(path, {})
