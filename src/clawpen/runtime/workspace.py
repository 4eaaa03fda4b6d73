"""An agent's ``/workspace`` with a size of its own: an ext4 image on a loop device.

Docker's local volumes have no size limit, so an agent could fill the host disk. Instead each
agent gets ``data_dir/workspaces/ID.ext4``, a sparse file of ``workspace_mb`` made with
``mkfs.ext4``, mounted by the orchestrator (``nosuid,nodev``) on ``data_dir/workspaces/ID`` and
bind-mounted into the container. When it is full the agent gets ENOSPC; the host disk holds at
most ``workspace_mb`` per agent. The host only ever makes, mounts and unmounts the image: it
never reads or writes a path inside it, so a symlink an agent plants there is never followed by
the host.

Needs CAP_SYS_ADMIN and loop devices, in the mount namespace dockerd uses (docs/service.md says
why the service is given them rather than a separate mount helper). Without them the agent does
not start (the error says so), unless its config asks for ``workspace_mb: 0``: a Docker volume
without any limit.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import ClawpenError

COMMAND_TIMEOUT = 60


class WorkspaceUnavailable(ClawpenError):
    """The size-limited workspace could not be made or mounted."""


def image_path(data_dir: Path, agent_id: str) -> Path:
    return data_dir / "workspaces" / f"{agent_id}.ext4"


def mount_point(data_dir: Path, agent_id: str) -> Path:
    return data_dir / "workspaces" / agent_id


def _run(*command: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise WorkspaceUnavailable(
            f"{command[0]} is not installed", "install e2fsprogs and mount (util-linux)"
        ) from None
    except subprocess.CalledProcessError as exc:
        # the whole output: mount's last line is only "dmesg(1) may have more information"
        output = " | ".join(
            line.strip()
            for line in f"{exc.stderr or ''}\n{exc.stdout or ''}".splitlines()
            if line.strip()
        )
        raise WorkspaceUnavailable(
            f"{command[0]} failed (exit {exc.returncode}): {output or 'no output'}",
            "the orchestrator needs CAP_SYS_ADMIN and the loop devices (/dev/loop-control,"
            " /dev/loopN) to mount agent workspaces: use the unit of `clawpen service install`"
            " or docker-compose.yml as written (docs/service.md), or set the agent's"
            " workspace_mb: 0 (an unlimited Docker volume on the host disk)",
        ) from None


def prepare(data_dir: Path, agent_id: str, size_mb: int, uid: int) -> Path:
    """Make (once) and mount the agent's workspace image; returns the host mount point.

    Idempotent: a workspace still mounted (say, by an orchestrator that was killed) is reused.
    A larger ``size_mb`` than the image has grows it; a smaller one leaves it as it is."""
    image = image_path(data_dir, agent_id)
    point = mount_point(data_dir, agent_id)
    point.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(point.parent, 0o711)
    point.mkdir(exist_ok=True)
    if os.path.ismount(point):
        return point
    size = size_mb * 1024 * 1024
    if not image.exists():
        fresh = image.with_suffix(".new")
        with open(fresh, "wb") as file:
            file.truncate(size)  # sparse: the host disk is used only as the agent writes
        os.chmod(fresh, 0o600)
        # -m 0: no blocks reserved for root (the agent is not root); root_owner: the agent's uid
        _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={uid}:{uid}", str(fresh))
        os.replace(fresh, image)
    elif image.stat().st_size < size:
        os.truncate(image, size)
        _run("e2fsck", "-f", "-p", str(image))
        _run("resize2fs", str(image))
    _run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(point))
    return point


def release(data_dir: Path, agent_id: str) -> None:
    """Unmount the workspace (its loop device goes with it); the image and its files stay."""
    point = mount_point(data_dir, agent_id)
    if not os.path.ismount(point):
        return
    try:
        _run("umount", str(point))
    except WorkspaceUnavailable:
        _run("umount", "--lazy", str(point))  # still busy for a moment: detach it now


def remove(data_dir: Path, agent_id: str) -> None:
    """Unmount the workspace and delete its image: the next ``prepare`` makes an empty one.

    The host still reads nothing inside: the image is one file outside it, and the mount point
    is empty once nothing is mounted on it. A workspace that stays mounted is an error, not a
    reset that silently kept the agent's files."""
    release(data_dir, agent_id)
    point = mount_point(data_dir, agent_id)
    if os.path.ismount(point):
        raise WorkspaceUnavailable(
            f"the workspace of {agent_id} is still mounted on {point}",
            f"stop whatever holds it (fuser -m {point}), then run clawpen agents reset again",
        )
    image = image_path(data_dir, agent_id)
    for leftover in (image, image.with_suffix(".new")):
        leftover.unlink(missing_ok=True)
    if point.is_dir():
        point.rmdir()


def mounted(data_dir: Path) -> list[str]:
    """Agents whose workspace is mounted now."""
    root = data_dir / "workspaces"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and os.path.ismount(p))
