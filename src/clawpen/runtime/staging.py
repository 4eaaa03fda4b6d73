"""Staged writes to a read-write mount (``approvals.ask: [mounts]``): the agent writes to a copy
of the folder; after each task the orchestrator lists what changed, a person allows or denies
it, and only then is it applied to the host folder (or the copy reset).

The copy is the agent's to write, so everything in it is hostile: it is read only through
directory descriptors, one component at a time, with ``O_NOFOLLOW`` (a symlink the agent made is
never followed, and never applied: it is listed as skipped), and only regular files are
carried over. The host folder is written the same way, through descriptors from its root, so a
path the agent named cannot lead the write out of it. What is applied is what was shown: each
file's hash is on the card, and a file that changed since is not applied.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_FILES = 5_000  # entries compared per mount; past it the review refuses (listed as such)
MAX_DIFF_BYTES = 256 * 1024  # larger files are summarised by size, not by lines
MAX_DEPTH = 32
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class Change:
    """One path (relative, ``/``-separated) that differs between the copy and the folder."""

    path: str
    kind: str  # added | changed | removed | skipped
    digest: str  # sha256 of the new content ("" for removed and skipped)
    summary: str  # "+3 -1 lines", "2.0 KB binary", "a symlink: not applied"


def staging_dir(data_dir: Path, agent_id: str, container: str) -> Path:
    return data_dir / "staging" / agent_id / Path(container).name


def prepare(host: Path, staged: Path, uid: int | None) -> Path:
    """The copy the agent writes to, made from the host folder the first time (kept across
    restarts: changes not yet reviewed stay). ``uid``: who may write it (when we are root)."""
    if not staged.exists():
        staged.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = staged.with_name(staged.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(host, fresh, symlinks=True)
        if uid is not None and os.geteuid() == 0:
            for path in [fresh, *fresh.rglob("*")]:
                os.lchown(path, uid, uid)
        os.rename(fresh, staged)
    return staged


def changes(host: Path, staged: Path) -> list[Change]:
    """What the agent changed in its copy, compared with the host folder; never following a
    link on either side."""
    host_fd = os.open(host, _DIR)
    staged_fd = os.open(staged, _DIR)
    try:
        new = dict(_walk(staged_fd))
        old = dict(_walk(host_fd))
        if len(new) > MAX_FILES or len(old) > MAX_FILES:
            return [Change(".", "skipped", "", f"more than {MAX_FILES} entries: not reviewed")]
        found = []
        for path in sorted(new.keys() | old.keys()):
            before, after = old.get(path), new.get(path)
            if after == "dir" or (after is None and before == "dir"):
                continue  # folders follow their files
            if after not in (None, "file"):
                found.append(Change(path, "skipped", "", f"a {after}: not applied"))
                continue
            old_data = _read(host_fd, path) if before == "file" else None
            if after is None:
                if old_data is not None:
                    found.append(Change(path, "removed", "", _summary(old_data, b"")))
                continue
            data = _read(staged_fd, path)
            if data is None:
                found.append(Change(path, "skipped", "", "unreadable: not applied"))
            elif data != old_data:
                kind = "added" if old_data is None else "changed"
                found.append(Change(path, kind, _digest(data), _summary(old_data or b"", data)))
        return found
    finally:
        os.close(host_fd)
        os.close(staged_fd)


def apply(host: Path, staged: Path, shown: list[Change]) -> list[str]:
    """Carry ``shown`` (the changes on the card) over to the host folder; returns the paths
    not applied because their content is no longer what was shown."""
    host_fd = os.open(host, _DIR)
    staged_fd = os.open(staged, _DIR)
    stale = []
    try:
        for change in shown:
            if change.kind == "removed":
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    parent, name = _parent(host_fd, change.path, create=False)
                    try:
                        os.unlink(name, dir_fd=parent)
                    finally:
                        os.close(parent)
            elif change.kind in ("added", "changed"):
                data = _read(staged_fd, change.path)
                if data is None or _digest(data) != change.digest:
                    stale.append(change.path)
                    continue
                try:
                    _write(host_fd, change.path, data)
                except OSError:  # a link or a file where the folder has a folder: not ours
                    stale.append(change.path)
    finally:
        os.close(host_fd)
        os.close(staged_fd)
    return stale


def discard(host: Path, staged: Path, uid: int | None) -> None:
    """Throw the agent's changes away: its copy is made afresh from the host folder."""
    shutil.rmtree(staged)  # descriptor-based on Linux: a link inside is removed, not followed
    prepare(host, staged, uid)


def card_lines(found: list[Change], limit: int = 20) -> str:
    lines = [f"{c.kind} {c.path} ({c.summary})" for c in found[:limit]]
    if len(found) > limit:
        lines.append(f"... and {len(found) - limit} more")
    return "\n".join(lines)


# -- descriptors all the way down ------------------------------------------------------------


def _walk(root_fd: int, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """(relative path, "file" | "dir" | "symlink" | "special") of everything below, no links
    followed."""
    if depth > MAX_DEPTH:
        return
    with os.scandir(root_fd) as entries:
        listed = [(e.name, e.stat(follow_symlinks=False).st_mode) for e in entries]
    for name, mode in listed:
        path = f"{prefix}{name}"
        if stat.S_ISLNK(mode):
            yield path, "symlink"
        elif stat.S_ISDIR(mode):
            yield path, "dir"
            try:
                fd = os.open(name, _DIR, dir_fd=root_fd)
            except OSError:
                continue
            try:
                yield from _walk(fd, path + "/", depth + 1)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode):
            yield path, "file"
        else:
            yield path, "special"


def _parent(root_fd: int, path: str, create: bool) -> tuple[int, str]:
    """A descriptor of ``path``'s folder (reached without following links) and its name."""
    *folders, name = path.split("/")
    if not name or name in (".", "..") or any(f in ("", ".", "..") for f in folders):
        raise FileNotFoundError(path)
    fd = os.dup(root_fd)
    try:
        for folder in folders:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, 0o755, dir_fd=fd)
            next_fd = os.open(folder, _DIR, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _read(root_fd: int, path: str) -> bytes | None:
    try:
        parent, name = _parent(root_fd, path, create=False)
    except OSError:
        return None
    try:
        fd = os.open(name, _FILE, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)


def _write(root_fd: int, path: str, data: bytes) -> None:
    parent, name = _parent(root_fd, path, create=True)
    temporary = f".{name}.clawpen-staged"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=parent)
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent
        )
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _summary(old: bytes, new: bytes) -> str:
    if len(old) > MAX_DIFF_BYTES or len(new) > MAX_DIFF_BYTES or b"\0" in old + new:
        return f"{len(new) / 1024:.1f} KB binary" if new else "removed"
    try:
        before, after = old.decode().splitlines(), new.decode().splitlines()
    except UnicodeDecodeError:
        return f"{len(new) / 1024:.1f} KB binary"
    diff = list(difflib.unified_diff(before, after, lineterm="", n=0))
    added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
    return f"+{added} -{removed} lines"
