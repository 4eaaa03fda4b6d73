"""The agent image builds, runs locked down as uid 10001, and rebuilds from the layer cache."""

from __future__ import annotations

from dataclasses import dataclass, field

import docker
import pytest

from clawpen.errors import DockerUnavailable, ImageBuildError
from clawpen.runtime.image import build_agent_image, image_exists

from .procs import TEST_IMAGE

pytestmark = pytest.mark.docker


@dataclass
class Build:
    image_id: str
    lines: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


@pytest.fixture(scope="module")
def first_build(client: docker.DockerClient) -> Build:
    lines: list[str] = []
    image_id = build_agent_image(client, tag=TEST_IMAGE, progress=lines.append)
    return Build(image_id, lines)


def _run(client: docker.DockerClient, code: str) -> str:
    output: bytes = client.containers.run(
        TEST_IMAGE,
        entrypoint=["python3", "-c", code],
        network_mode="none",
        read_only=True,
        remove=True,
    )
    return output.decode().strip()


def test_build_tags_the_image(client: docker.DockerClient, first_build: Build) -> None:
    assert image_exists(client, TEST_IMAGE)
    assert client.images.get(TEST_IMAGE).id == first_build.image_id
    assert any("Successfully built" in line for line in first_build.lines)


def test_image_runs_the_agent_package_as_10001_read_only(
    client: docker.DockerClient, first_build: Build
) -> None:
    code = "import os, clawpen_agent as a; print(os.getuid(), os.getgid(), os.getcwd(), a.__file__)"
    assert _run(client, code) == "10001 10001 /workspace /opt/clawpen/clawpen_agent/__init__.py"


def test_image_has_the_stdlib_the_agent_needs(
    client: docker.DockerClient, first_build: Build
) -> None:
    code = "import asyncio, http.client, json, select, socket, sqlite3, ssl, subprocess, zlib"
    assert _run(client, code + "; print('ok')") == "ok"


def test_second_build_reuses_cached_layers(client: docker.DockerClient, first_build: Build) -> None:
    lines: list[str] = []
    image_id = build_agent_image(client, tag=TEST_IMAGE, progress=lines.append)
    assert image_id == first_build.image_id
    copy_steps = [i for i, line in enumerate(lines) if line.startswith("Step") and " COPY " in line]
    assert len(copy_steps) == 2
    for step in copy_steps:
        assert "Using cache" in lines[step + 1], lines


def test_missing_base_image_is_a_build_error(client: docker.DockerClient) -> None:
    with pytest.raises(ImageBuildError, match="building clawpen-agent:never failed"):
        build_agent_image(
            client, tag="clawpen-agent:never", base="clawpen-no-such-base:none", progress=print
        )
    assert not image_exists(client, "clawpen-agent:never")


def test_unreachable_engine_says_how_to_start_it() -> None:
    nowhere = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    with pytest.raises(DockerUnavailable, match="dockerd"):
        build_agent_image(nowhere, progress=print)
