"""The agent's tools: a shell and files under /workspace, all inside the container.

Each tool is a function of its JSON input returning text for a ``tool_result``; failures are
returned as text with ``is_error`` so the model can see and correct them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .protocol import WORKSPACE

MAX_OUTPUT = 16_000
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 600

ToolFn = Callable[[dict[str, Any], str], str]


class ToolError(Exception):
    """A tool failed in a way the model should be told about."""


def _clip(text: str) -> str:
    if len(text) <= MAX_OUTPUT:
        return text
    return text[: MAX_OUTPUT // 2] + "\n...[output truncated]...\n" + text[-MAX_OUTPUT // 2 :]


def _timeout(args: dict[str, Any]) -> int:
    value = args.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise ToolError(f"'timeout' must be a number of seconds >= 1, not {value!r}")
    return min(int(value), MAX_TIMEOUT)


def shell(args: dict[str, Any], root: str = WORKSPACE) -> str:
    """Run ``/bin/sh -c command``. Output goes to a file, not a pipe, so that a background job
    (``server &``) that inherits it does not hold the call open; on timeout the whole process
    group is killed."""
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolError("shell needs a non-empty string 'command'")
    timeout = _timeout(args)
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            output.seek(0)
            partial = output.read().decode(errors="replace")
            raise ToolError(f"timed out after {timeout}s\n{_clip(partial)}") from None
        output.seek(0)
        text = output.read().decode(errors="replace")
    return f"exit_code: {code}\n{_clip(text)}"


def resolve_inside(root: str, relative: str) -> Path:
    """Resolve ``relative`` under ``root``, refusing anything (``..``, symlinks) that leaves it."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ToolError(f"{relative!r} is outside {root}")
    return target


def read_file(args: dict[str, Any], root: str = WORKSPACE) -> str:
    path = resolve_inside(root, str(args.get("path", "")))
    try:
        return _clip(path.read_text(errors="replace"))
    except OSError as exc:
        raise ToolError(f"cannot read {args.get('path')!r}: {exc.strerror}") from exc


def write_file(args: dict[str, Any], root: str = WORKSPACE) -> str:
    path = resolve_inside(root, str(args.get("path", "")))
    content = args.get("content")
    if not isinstance(content, str):
        raise ToolError("write_file needs a string 'content'")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    except OSError as exc:
        raise ToolError(f"cannot write {args.get('path')!r}: {exc.strerror}") from exc
    return f"wrote {len(content.encode())} bytes to {path}"


def list_files(args: dict[str, Any], root: str = WORKSPACE) -> str:
    path = resolve_inside(root, str(args.get("path", ".")))
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise ToolError(f"cannot list {args.get('path', '.')!r}: {exc.strerror}") from exc
    return "\n".join(e.name + ("/" if e.is_dir() else "") for e in entries) or "(empty)"


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "name": "shell",
        "description": "Run a shell command inside your container (cwd /workspace). "
        "Returns the exit code and combined output.",
        "input_schema": _schema(
            {
                "command": {"type": "string", "description": "The command for /bin/sh -c"},
                "timeout": {"type": "integer", "description": "Seconds, default 60, max 600"},
            },
            ["command"],
        ),
    },
    {
        "name": "read_file",
        "description": "Read a text file under /workspace.",
        "input_schema": _schema({"path": {"type": "string"}}, ["path"]),
    },
    {
        "name": "write_file",
        "description": "Create or replace a text file under /workspace.",
        "input_schema": _schema(
            {"path": {"type": "string"}, "content": {"type": "string"}}, ["path", "content"]
        ),
    },
    {
        "name": "list_files",
        "description": "List a directory under /workspace.",
        "input_schema": _schema({"path": {"type": "string"}}, []),
    },
]

TOOLS: dict[str, ToolFn] = {
    "shell": shell,
    "read_file": read_file,
    "write_file": write_file,
    "list_files": list_files,
}


def run_tool(name: str, args: dict[str, Any], root: str = WORKSPACE) -> tuple[str, bool]:
    """Run one tool call; returns (text, is_error)."""
    tool = TOOLS.get(name)
    if tool is None:
        return f"unknown tool {name!r}", True
    try:
        return tool(args, root), False
    except ToolError as exc:
        return str(exc), True
