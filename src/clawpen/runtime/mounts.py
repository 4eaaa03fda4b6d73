"""Extra host folders for an agent: only through an allowlist that the agents cannot reach.

An agent's config asks (``agents[].mounts``); the allowlist, a file kept outside the project and
the data dir (``CLAWPEN_MOUNT_ALLOWLIST``, else ``~/.config/clawpen/mount-allowlist.yaml``),
grants. ``decide`` is the whole rule, as one pure function of already-resolved paths::

    allowed:                         # ~/.config/clawpen/mount-allowlist.yaml
      - path: ~/projects/notes
        read_write: true             # default false: agents mount it read-only

Symlinks are resolved before the check (``resolve_request``), so a link inside an allowed folder
cannot point the mount elsewhere; sensitive paths (keys, cloud credentials, the Docker socket,
system directories, clawpen's own data dir) are refused even when the allowlist names them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ClawpenError

ALLOWLIST_ENV = "CLAWPEN_MOUNT_ALLOWLIST"
# /mnt/NAME for agents[].mounts; /mnt/skills/NAME for skills (config/skills.py)
CONTAINER_PATH = re.compile(r"^/mnt/(skills/)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A folder with one of these names, at any depth, holds credentials: never mounted, nor anything
# that contains one.
SENSITIVE_NAMES = frozenset(
    {
        ".ssh",
        ".aws",
        ".gnupg",
        ".env",
        ".kube",
        ".docker",
        ".azure",
        ".netrc",
        ".git-credentials",
        ".password-store",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        "gcloud",
        "id_rsa",
        "id_ed25519",
    }
)
# System paths never mounted, nor any folder that contains one (so not ``/`` either).
SYSTEM_PATHS = (
    "/etc",
    "/root",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
)
SCAN_LIMIT = 20_000  # entries looked at below a requested folder for sensitive names


class MountRefused(ClawpenError):
    """A requested mount is not allowed; the message names the rule."""


@dataclass(frozen=True)
class MountRequest:
    """What an agent's config asks for (``host`` as written)."""

    host: str
    container: str
    read_only: bool = True
    # approvals.ask: [mounts]: the agent writes to a copy (``staging.py``), applied on a tap
    staged: bool = False


@dataclass(frozen=True)
class AllowedRoot:
    path: Path  # resolved
    read_write: bool = False


@dataclass(frozen=True)
class Mount:
    """A granted mount: a resolved host path, where it appears, and how."""

    host: Path
    container: str
    read_only: bool


def default_allowlist_path(env: Mapping[str, str]) -> Path:
    """Where the allowlist lives: ``$CLAWPEN_MOUNT_ALLOWLIST``, else the user's config dir."""
    if env.get(ALLOWLIST_ENV):
        return Path(env[ALLOWLIST_ENV]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "/root")) / ".config")
    return base / "clawpen" / "mount-allowlist.yaml"


def within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def decide(
    request: MountRequest,
    resolved: Path,
    allowlist: Iterable[AllowedRoot],
    protected: Iterable[Path],
) -> Mount | str:
    """The verdict on one request: a ``Mount``, or the reason it is refused.

    ``resolved`` is the request's host path with every symlink resolved; ``protected`` are
    resolved paths never exposed (the data dir, the allowlist file, home credential folders).
    """
    if not CONTAINER_PATH.fullmatch(request.container):
        return f"container path {request.container!r} must be /mnt/NAME"
    for part in resolved.parts:
        if part in SENSITIVE_NAMES:
            return f"{resolved} is a sensitive path ({part})"
    for system in (Path(p) for p in SYSTEM_PATHS):
        if within(resolved, system) or within(system, resolved):
            return f"{resolved} is or contains the system path {system}"
    for path in protected:
        if within(resolved, path) or within(path, resolved):
            return f"{resolved} is or contains {path}, which clawpen protects"
    roots = [root for root in allowlist if within(resolved, root.path)]
    if not roots:
        return f"{resolved} is not under any folder of the mount allowlist"
    if not request.read_only and not any(root.read_write for root in roots):
        return f"{resolved} is allowed read-only only (the allowlist says no read_write)"
    return Mount(resolved, request.container, request.read_only)


def resolve_request(request: MountRequest) -> Path:
    """The host path with ``~`` expanded and every symlink resolved; it must exist."""
    path = Path(request.host).expanduser()
    if not path.is_absolute():
        raise MountRefused(
            f"mount {request.host!r}: the host path must be absolute", "write the full path"
        )
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise MountRefused(
            f"mount {request.host!r}: no such folder", "create it or fix agents[].mounts"
        ) from None


def sensitive_inside(root: Path, limit: int = SCAN_LIMIT) -> str | None:
    """The first sensitive name below ``root`` (not following links), or why we could not tell."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            seen += 1
            if name in SENSITIVE_NAMES:
                return f"{root} contains the sensitive path {Path(dirpath) / name}"
            if seen > limit:
                return f"{root} holds more than {limit} entries, too many to check for credentials"
    return None


def load_allowlist(path: Path, forbidden_dirs: Iterable[Path]) -> list[AllowedRoot]:
    """The allowlist's roots, resolved. The file must not live where an agent or the project
    could change it (inside ``forbidden_dirs``: the data dir and the config's folder)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise MountRefused(
            f"mount allowlist {path} does not exist",
            f"create it (see docs/security.md, extra host folders) or set {ALLOWLIST_ENV}",
        ) from None
    for directory in forbidden_dirs:
        if within(real, directory.resolve()):
            raise MountRefused(
                f"mount allowlist {real} lies inside {directory}",
                "keep it outside the project and the data dir, e.g. ~/.config/clawpen/",
            )
    try:
        raw = yaml.safe_load(real.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MountRefused(
            f"mount allowlist {real} cannot be read ({type(exc).__name__})", "fix the file"
        ) from None
    entries = raw.get("allowed") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise MountRefused(
            f"mount allowlist {real}: expected `allowed:` with a list",
            "see docs/security.md, extra host folders",
        )
    roots = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise MountRefused(
                f"mount allowlist {real}: allowed.{i} needs a path",
                "see docs/security.md, extra host folders",
            )
        try:
            root = Path(entry["path"]).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue  # a folder that does not exist grants nothing
        roots.append(AllowedRoot(root, entry.get("read_write") is True))
    return roots


def grant(
    requests: Iterable[MountRequest],
    allowlist_path: Path,
    data_dir: Path,
    project_dir: Path | None = None,
) -> list[Mount]:
    """Every request checked against the allowlist, or ``MountRefused`` naming the first bad one.

    Runs at each container start, so a folder swapped for a symlink since the last start is
    caught."""
    requests = list(requests)
    if not requests:
        return []
    forbidden = [data_dir] + ([project_dir] if project_dir else [])
    allowlist = load_allowlist(allowlist_path, forbidden)
    for root in allowlist:
        if root.read_write and within(allowlist_path.resolve(), root.path):
            raise MountRefused(
                f"mount allowlist {allowlist_path} lies inside {root.path}, which agents may write",
                "move the allowlist out of every read_write folder",
            )
    protected = [data_dir.resolve(), allowlist_path.resolve(), *home_credentials()]
    mounts = []
    seen: set[str] = set()
    for request in requests:
        verdict = decide(request, resolve_request(request), allowlist, protected)
        if isinstance(verdict, Mount):
            problem = sensitive_inside(verdict.host)
            if problem is None and verdict.container in seen:
                problem = f"{verdict.container} is mounted twice"
            if problem is None:
                seen.add(verdict.container)
                mounts.append(verdict)
                continue
            verdict = problem
        raise MountRefused(
            f"mount {request.host} -> {request.container} refused: {verdict}",
            f"fix agents[].mounts or the allowlist {allowlist_path}",
        )
    return mounts


def home_credentials() -> list[Path]:
    """Credential folders in every home directory on this machine."""
    homes = [Path("/root"), *(p for p in Path("/home").glob("*") if p.is_dir())]
    return [home / name for home in homes for name in SENSITIVE_NAMES]
