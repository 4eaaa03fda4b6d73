"""File tools under /workspace: read, write, edit, list, glob, grep.

Every path is resolved (``..`` and symlinks followed) and must land inside the workspace. This
is a convenience for the model, not the security boundary: the container is (the agent's shell
can read whatever its container holds anyway).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

from .protocol import WORKSPACE

MAX_OUTPUT = 16_000
MAX_MATCHES = 200
MAX_GLOB_RESULTS = 500
MAX_GREP_FILE_BYTES = 2 * 1024 * 1024
HIDDEN = frozenset({".clawpen"})  # the agent's own bookkeeping (history, memory): not its files


class ToolError(Exception):
    """A tool failed in a way the model should be told about."""


def clip(text: str) -> str:
    if len(text) <= MAX_OUTPUT:
        return text
    return text[: MAX_OUTPUT // 2] + "\n...[output truncated]...\n" + text[-MAX_OUTPUT // 2 :]


def resolve_inside(root: str, relative: str) -> Path:
    """Resolve ``relative`` under ``root``, refusing anything (``..``, symlinks) that leaves it."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ToolError(f"{relative!r} is outside {root}")
    return target


def _string(args: dict[str, Any], name: str, tool: str, empty: bool = True) -> str:
    value = args.get(name)
    if not isinstance(value, str) or (not empty and not value):
        raise ToolError(f"{tool} needs a {'' if empty else 'non-empty '}string {name!r}")
    return value


def read_file(args: dict[str, Any], root: str = WORKSPACE) -> str:
    """The file's text; with ``offset``/``limit`` (lines, from 1) a numbered slice of it."""
    path = resolve_inside(root, str(args.get("path", "")))
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ToolError(f"cannot read {args.get('path')!r}: {exc.strerror}") from exc
    offset, limit = args.get("offset"), args.get("limit")
    if offset is None and limit is None:
        return clip(text)
    start = max(1, offset if isinstance(offset, int) else 1)
    lines = text.splitlines()
    count = limit if isinstance(limit, int) and limit > 0 else len(lines)
    chosen = lines[start - 1 : start - 1 + count]
    return clip("\n".join(f"{n:>6}\t{line}" for n, line in enumerate(chosen, start)))


def write_file(args: dict[str, Any], root: str = WORKSPACE) -> str:
    path = resolve_inside(root, str(args.get("path", "")))
    content = _string(args, "content", "write_file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    except OSError as exc:
        raise ToolError(f"cannot write {args.get('path')!r}: {exc.strerror}") from exc
    return f"wrote {len(content.encode())} bytes to {path}"


def edit_file(args: dict[str, Any], root: str = WORKSPACE) -> str:
    """Replace an exact string: once (it must occur exactly once) or, with ``replace_all``,
    everywhere. Nothing is written when the edit is refused."""
    path = resolve_inside(root, str(args.get("path", "")))
    old = _string(args, "old_string", "edit_file", empty=False)
    new = _string(args, "new_string", "edit_file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ToolError(f"cannot edit {args.get('path')!r}: {reason}") from exc
    found = text.count(old)
    if found == 0:
        raise ToolError(f"old_string does not occur in {args.get('path')!r}; read it first")
    if found > 1 and not args.get("replace_all"):
        raise ToolError(
            f"old_string occurs {found} times; give more context to make it unique,"
            " or set replace_all"
        )
    try:
        path.write_text(text.replace(old, new))
    except OSError as exc:
        raise ToolError(f"cannot write {args.get('path')!r}: {exc.strerror}") from exc
    return f"replaced {found} occurrence{'s' * (found > 1)} in {args.get('path')}"


def list_files(args: dict[str, Any], root: str = WORKSPACE) -> str:
    path = resolve_inside(root, str(args.get("path", ".")))
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise ToolError(f"cannot list {args.get('path', '.')!r}: {exc.strerror}") from exc
    shown = [e for e in entries if not (path == Path(root).resolve() and e.name in HIDDEN)]
    return "\n".join(e.name + ("/" if e.is_dir() else "") for e in shown) or "(empty)"


def glob(args: dict[str, Any], root: str = WORKSPACE) -> str:
    """Paths matching a pattern (``**/*.py``), relative to the workspace, sorted."""
    pattern = _string(args, "pattern", "glob", empty=False)
    if pattern.startswith("/") or ".." in Path(pattern).parts:
        raise ToolError("the pattern must be relative to /workspace, without '..'")
    base = resolve_inside(root, str(args.get("path", ".")))
    workspace = Path(root).resolve()
    found = []
    for match in base.glob(pattern):
        try:
            resolved = match.resolve()
        except OSError:
            continue
        relative = match.relative_to(workspace) if match.is_relative_to(workspace) else match
        if resolved != workspace and workspace not in resolved.parents:
            continue  # a symlink that leads out
        if relative.parts and relative.parts[0] in HIDDEN:
            continue
        found.append(str(relative) + ("/" if match.is_dir() else ""))
        if len(found) > MAX_GLOB_RESULTS:
            break
    found.sort()
    if len(found) > MAX_GLOB_RESULTS:
        return "\n".join(found[:MAX_GLOB_RESULTS]) + f"\n...[more than {MAX_GLOB_RESULTS}]"
    return "\n".join(found) or "(no match)"


def grep(args: dict[str, Any], root: str = WORKSPACE) -> str:
    """Lines matching a regular expression, as ``path:line: text``; binary files and files
    over 2 MB are skipped; ``include`` filters file names (``*.py``)."""
    raw = _string(args, "pattern", "grep", empty=False)
    try:
        pattern = re.compile(raw, re.IGNORECASE if args.get("ignore_case") else 0)
    except re.error as exc:
        raise ToolError(f"not a valid regular expression: {exc}") from None
    include = args.get("include")
    workspace = Path(root).resolve()
    base = resolve_inside(root, str(args.get("path", ".")))
    lines: list[str] = []
    for file in _walk(base, workspace):
        if isinstance(include, str) and include and not fnmatch.fnmatch(file.name, include):
            continue
        for number, line in _matching_lines(file, pattern):
            lines.append(f"{file.relative_to(workspace)}:{number}: {line[:300]}")
            if len(lines) >= MAX_MATCHES:
                return clip("\n".join(lines) + f"\n...[stopped at {MAX_MATCHES} matches]")
    return clip("\n".join(lines)) or "(no match)"


def _walk(base: Path, workspace: Path) -> list[Path]:
    if base.is_file():
        return [base]
    files = []
    for directory, dirs, names in os.walk(base):  # symlinked directories are not followed
        dirs[:] = sorted(d for d in dirs if not (Path(directory) == workspace and d in HIDDEN))
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_symlink():
                try:
                    target = path.resolve()
                except OSError:
                    continue
                if workspace not in target.parents:
                    continue
            files.append(path)
    return files


def _matching_lines(file: Path, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    try:
        if file.stat().st_size > MAX_GREP_FILE_BYTES:
            return []
        data = file.read_bytes()
    except OSError:
        return []
    if b"\x00" in data[:8192]:
        return []
    text = data.decode(errors="replace")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
