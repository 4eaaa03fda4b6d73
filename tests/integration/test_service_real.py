"""The service files for real: the orchestrator under the exact capability set of the unit
`clawpen service install` writes answers with a fresh agent whose /workspace is its ext4 image
(without CAP_SYS_ADMIN it cannot, and says why in full); the compose file's privileges mount a
workspace image inside a container so that the host's engine sees it in an agent's container.

PID 1 here is not systemd, so `systemd-run` cannot start the unit itself: `setpriv` gives the
orchestrator the unit's bounding set and no_new_privs, in the host's mount namespace as the unit
(which has no mount namespace of its own) does. No compose binary is installed either: the
compose file's options are read from it and given to the Docker SDK as compose would."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml
from docker.types import Mount

from clawpen.cli.service import ServiceSpec, unit
from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id

from .procs import Orchestrator, clawpen, write_config

ROOT = Path(__file__).resolve().parents[2]


def unit_privileges() -> tuple[str, ...]:
    """`setpriv` with the unit's CapabilityBoundingSet and NoNewPrivileges."""
    text = unit(ServiceSpec(Path("/x/clawpen"), Path("/x/c.yaml"), Path("/x/data"), None))
    found = dict(row.split("=", 1) for row in text.splitlines() if "=" in row and row[0] != "#")
    caps = [cap.removeprefix("CAP_").lower() for cap in found["CapabilityBoundingSet"].split()]
    assert found["NoNewPrivileges"] == "yes"
    bounding = ",".join(["-all", *(f"+{cap}" for cap in caps)])
    return ("setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs", "--")


async def chat_under(
    prefix: tuple[str, ...], tmp_path: Path, model: FakeModel, key: str, cleanup: list[str]
) -> str:
    config = write_config(tmp_path / "clawpen.yaml", model.url, agent_lines=("workspace_mb: 64",))
    cleanup.append(instance_id(tmp_path / "data"))
    orchestrator = Orchestrator(config, {"ANTHROPIC_API_KEY": key}, prefix=prefix)
    await orchestrator.start()
    try:
        code, out, err = await clawpen(
            "chat", "--config", str(config), "run: stat -f -c %T /workspace; df -m /workspace"
        )
        assert code == 0, err
        return out
    finally:
        assert await orchestrator.stop() == 0


@pytest.mark.docker
async def test_under_the_units_capabilities_a_fresh_agent_answers_on_its_own_workspace(
    tmp_path: Path, fake_model: FakeModel, api_key: str, agent_image: str,
    cleanup_instance: list[str],
) -> None:  # fmt: skip
    prefix = unit_privileges()
    held = subprocess.run(  # noqa: ASYNC221 (a quick look before the orchestrator starts)
        [*prefix, "grep", "CapEff", "/proc/self/status"], capture_output=True
    )
    assert held.stdout.split()[1] != b"000001ffffffffff"  # setpriv really dropped the others
    out = await chat_under(prefix, tmp_path, fake_model, api_key, cleanup_instance)
    assert "ext2/ext3" in out  # the ext4 image, mounted by the orchestrator, seen in the agent
    assert " 5" in out or " 6" in out  # about 64 MB, not the host's disk


@pytest.mark.docker
async def test_without_sys_admin_the_agent_cannot_start_and_the_chat_gets_mounts_whole_error(
    tmp_path: Path, fake_model: FakeModel, api_key: str, agent_image: str,
    cleanup_instance: list[str],
) -> None:  # fmt: skip
    prefix = tuple(arg.replace(",+sys_admin", "") for arg in unit_privileges())
    out = await chat_under(prefix, tmp_path, fake_model, api_key, cleanup_instance)
    assert "mount failed (exit 32): mount: " in out, out
    assert "permission denied" in out.lower() and "CAP_SYS_ADMIN" in out, out


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a shared mount, as systemd makes `/` on a host (it is private here)."""
    directory = tmp_path / "project"
    directory.mkdir()
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    subprocess.run(["mount", "--make-shared", str(directory)], check=True)
    yield directory
    subprocess.run(["umount", "--recursive", "--lazy", str(directory)], check=True)


def compose_options(project: Path) -> dict[str, object]:
    """docker-compose.yml's service as Docker SDK arguments, ${PWD} being ``project``."""
    text = (ROOT / "docker-compose.yml").read_text().replace("${PWD}", str(project))
    service = yaml.safe_load(text)["services"]["clawpen"]
    mounts = []
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")
            mounts.append(Mount(target, source, type="bind"))
        else:
            shared = volume.get("bind", {}).get("propagation")
            mounts.append(Mount(volume["target"], volume["source"], "bind", propagation=shared))
    return {
        "cap_add": service["cap_add"],
        "security_opt": service["security_opt"],
        "device_cgroup_rules": service["device_cgroup_rules"],
        "mounts": mounts,
        "network_mode": service["network_mode"],
        "working_dir": service["working_dir"],
    }


@pytest.mark.docker
def test_the_compose_files_privileges_mount_a_workspace_the_hosts_engine_gives_an_agent(
    shared_dir: Path, docker_client: docker.DockerClient, agent_image: str
) -> None:
    """The orchestrator's image cannot be built here (no python:3.11-slim without Docker Hub);
    the agent image's Debian has the same mkfs.ext4 and mount, and clawpen's workspace module
    is run from this tree's src with its own commands."""
    options = compose_options(shared_dir)
    src = Mount("/clawpen-src", str(ROOT / "src"), type="bind", read_only=True)
    options["mounts"] = [*options["mounts"], src]  # type: ignore[list-item]
    data = shared_dir / "data"
    script = (
        "import sys; sys.path.insert(0, '/clawpen-src');"
        "import importlib.util as u, types;"
        "from pathlib import Path;"
        # clawpen's package imports need its dependencies; the module itself needs only errors
        "sys.modules['clawpen'] = types.ModuleType('clawpen');"
        "sys.modules['clawpen'].__path__ = ['/clawpen-src/clawpen'];"
        "from clawpen.runtime import workspace;"
        f"point = workspace.prepare(Path('{data}'), 'assistant', 64, 10001);"
        "print(point)"
    )
    name = f"clawpen-compose-{uuid.uuid4().hex[:8]}"
    try:
        logs = docker_client.containers.run(
            agent_image, ["python3", "-c", script], name=name, user="0", entrypoint=[],
            **options,
        )  # fmt: skip
    finally:
        docker_client.containers.get(name).remove(force=True)
    point = Path(logs.decode().strip().splitlines()[-1])
    try:
        assert os.path.ismount(point)  # the mount made in the container reached the host
        seen = docker_client.containers.run(
            agent_image, ["sh", "-c", "stat -f -c %T /workspace; touch /workspace/ok; ls /workspace"],  # noqa: E501
            mounts=[Mount("/workspace", str(point), type="bind")], remove=True, user="10001",
            entrypoint=[], network_mode="none",
        ).decode()  # fmt: skip
        assert "ext2/ext3" in seen and "ok" in seen  # the agent writes into the image
    finally:
        subprocess.run(["umount", str(point)], check=True)
