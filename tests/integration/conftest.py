"""Integration fixtures: a real Docker engine and the real agent image."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from clawpen.image import DEFAULT_TAG, build_agent_image


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    """The agent image as the repo builds it now (cached layers make this quick)."""
    build_agent_image(docker_client, tag=DEFAULT_TAG, progress=lambda line: None)
    return DEFAULT_TAG


@pytest.fixture
def cleanup_instance(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Instances (data dirs) whose containers and volumes a test leaves behind get removed."""
    instances: list[str] = []
    yield instances
    for instance in instances:
        label = {"label": [f"clawpen.instance={instance}"]}
        for container in docker_client.containers.list(all=True, filters=label):
            container.remove(force=True)
        for volume in docker_client.volumes.list(filters=label):
            volume.remove(force=True)
