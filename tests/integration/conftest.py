"""Integration fixtures: a real Docker engine and the real agent image."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from clawpen.app import Orchestrator
from clawpen.runtime import workspace
from clawpen.runtime.docker import DockerRuntime
from clawpen.runtime.image import build_agent_image
from clawpen.runtime.pool import instance_id
from tests.fakes.fake_telegram import FakeTelegram

from .procs import TEST_IMAGE


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    """The agent image as the repo builds it now (cached layers make this quick), tagged
    ``CLAWPEN_TEST_IMAGE`` (default clawpen-agent:latest)."""
    build_agent_image(docker_client, tag=TEST_IMAGE, progress=lambda line: None)
    return TEST_IMAGE


def workspace_mounts() -> list[Path]:
    """Mount points of agents' workspace images (``data_dir/workspaces/ID``) on this host."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if point.parent.name == "workspaces":
            points.append(point)
    return points


@pytest.fixture
def cleanup_instance(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Instances (data dirs) whose containers, volumes and mounted workspace images a test
    leaves behind (say, after a kill -9) get removed."""
    instances: list[str] = []
    yield instances
    for instance in instances:
        label = {"label": [f"clawpen.instance={instance}"]}
        for container in docker_client.containers.list(all=True, filters=label):
            container.remove(force=True)
        for volume in docker_client.volumes.list(filters=label):
            volume.remove(force=True)
    for point in workspace_mounts():
        if instance_id(point.parent.parent) in instances:
            workspace.release(point.parent.parent, point.name)


DockerOrchestratorFactory = Callable[..., tuple[Orchestrator, str]]


@pytest.fixture
def docker_orchestrator_factory(
    orchestrator_factory: Callable[..., Orchestrator],
    docker_client: docker.DockerClient,
    agent_image: str,
    cleanup_instance: list[str],
    tmp_path: Path,
) -> DockerOrchestratorFactory:
    """An in-process orchestrator with real containers; returns it and its instance id."""

    def build(telegram: FakeTelegram | None = None, **overrides: Any) -> tuple[Orchestrator, str]:
        instance = instance_id(tmp_path / "data")
        cleanup_instance.append(instance)
        runtime = DockerRuntime(
            docker_client, instance, tmp_path / "data", allowlist=tmp_path / "no-allowlist.yaml"
        )
        overrides.setdefault("image", agent_image)
        return orchestrator_factory(runtime, telegram, **overrides), instance

    return build
