"""Extra host folders reach an agent only through the allowlist, never a sensitive path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawpen.runtime.mounts import (
    AllowedRoot,
    Mount,
    MountRefused,
    MountRequest,
    decide,
    default_allowlist_path,
    grant,
)

ROOTS = [AllowedRoot(Path("/srv/shared")), AllowedRoot(Path("/srv/rw"), read_write=True)]
PROTECTED = [Path("/srv/clawpen-data"), Path("/home/u/.config/clawpen/mount-allowlist.yaml")]


@pytest.mark.parametrize(
    ("host", "container", "read_only", "verdict"),
    [
        ("/srv/shared", "/mnt/shared", True, Mount(Path("/srv/shared"), "/mnt/shared", True)),
        ("/srv/shared/sub", "/mnt/sub", True, Mount(Path("/srv/shared/sub"), "/mnt/sub", True)),
        ("/srv/rw/x", "/mnt/x", False, Mount(Path("/srv/rw/x"), "/mnt/x", False)),
        ("/srv/shared", "/mnt/shared", False, "allowed read-only only"),
        ("/srv/sharedness", "/mnt/s", True, "not under any folder of the mount allowlist"),
        ("/srv", "/mnt/s", True, "is or contains /srv/clawpen-data"),
        ("/srv/shared/.ssh", "/mnt/s", True, "sensitive path (.ssh)"),
        ("/srv/shared/app/.env", "/mnt/s", True, "sensitive path (.env)"),
        ("/srv/shared/.aws/creds", "/mnt/s", True, "sensitive path (.aws)"),
        ("/srv/shared/.docker", "/mnt/s", True, "sensitive path (.docker)"),
        ("/etc", "/mnt/s", True, "system path /etc"),
        ("/", "/mnt/s", True, "system path"),
        ("/var/run/docker.sock", "/mnt/s", True, "system path /var/run"),
        ("/root/notes", "/mnt/s", True, "system path /root"),
        ("/srv/clawpen-data/agents", "/mnt/s", True, "which clawpen protects"),
        ("/srv/shared", "/workspace", True, "must be /mnt/NAME"),
        ("/srv/shared", "/mnt/../etc", True, "must be /mnt/NAME"),
    ],
)
def test_decide(host: str, container: str, read_only: bool, verdict: Mount | str) -> None:
    roots = [*ROOTS, AllowedRoot(Path("/")), AllowedRoot(Path("/srv"))]
    if "allowlist" in str(verdict) or "read-only" in str(verdict):
        roots = ROOTS  # these rows are about what the allowlist grants
    result = decide(MountRequest(host, container, read_only), Path(host), roots, PROTECTED)
    if isinstance(verdict, Mount):
        assert result == verdict
    else:
        assert isinstance(result, str) and verdict in result


def test_the_allowlist_lives_in_the_users_config_dir_unless_the_environment_says() -> None:
    assert default_allowlist_path({"HOME": "/home/u"}) == Path(
        "/home/u/.config/clawpen/mount-allowlist.yaml"
    )
    assert default_allowlist_path({"CLAWPEN_MOUNT_ALLOWLIST": "/etc/x.yaml"}) == Path("/etc/x.yaml")


@pytest.fixture
def host(tmp_path: Path) -> Path:
    (tmp_path / "allowed" / "project").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "allow.yaml").write_text(f"allowed:\n  - path: {tmp_path}/allowed\n")
    return tmp_path


def test_a_symlink_is_resolved_before_the_check(host: Path) -> None:
    os.symlink(host / "secret", host / "allowed" / "link")
    request = MountRequest(str(host / "allowed" / "link"), "/mnt/link")
    with pytest.raises(MountRefused, match="not under any folder"):
        grant([request], host / "config" / "allow.yaml", host / "data")


def test_a_folder_holding_credentials_is_refused(host: Path) -> None:
    (host / "allowed" / "project" / "deploy").mkdir()
    (host / "allowed" / "project" / "deploy" / ".env").write_text("KEY=1")
    request = MountRequest(str(host / "allowed" / "project"), "/mnt/p")
    with pytest.raises(MountRefused, match=r"contains the sensitive path .*deploy/\.env"):
        grant([request], host / "config" / "allow.yaml", host / "data")


def test_an_allowed_folder_is_granted_read_only(host: Path) -> None:
    request = MountRequest(str(host / "allowed" / "project"), "/mnt/p")
    mounts = grant([request], host / "config" / "allow.yaml", host / "data")
    assert mounts == [Mount(host / "allowed" / "project", "/mnt/p", True)]


def test_an_allowlist_inside_the_data_dir_grants_nothing(host: Path) -> None:
    (host / "data" / "allow.yaml").write_text(f"allowed:\n  - path: {host}/allowed\n")
    request = MountRequest(str(host / "allowed" / "project"), "/mnt/p")
    with pytest.raises(MountRefused, match="lies inside"):
        grant([request], host / "data" / "allow.yaml", host / "data")


def test_without_an_allowlist_no_folder_is_mounted(host: Path) -> None:
    request = MountRequest(str(host / "allowed" / "project"), "/mnt/p")
    with pytest.raises(MountRefused, match="does not exist"):
        grant([request], host / "config" / "missing.yaml", host / "data")
    assert grant([], host / "config" / "missing.yaml", host / "data") == []
