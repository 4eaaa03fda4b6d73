"""The agent's tools: a shell and files under /workspace, all inside the container.

Each tool is a function of its JSON input returning text for a ``tool_result``; failures are
returned as text with ``is_error`` so the model can see and correct them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from . import stopping
from .filetools import (
    MAX_OUTPUT,
    ToolError,
    clip,
    edit_file,
    glob,
    grep,
    list_files,
    read_file,
    resolve_inside,
    write_file,
)
from .memory import MAX_KEY_CHARS, MAX_VALUE_CHARS, Memory, MemoryRefused
from .protocol import (
    JOBS_PATH,
    MAX_CAPTION_CHARS,
    MAX_FETCH_CHARS,
    MAX_SEND_CHARS,
    MAX_SEND_FILE_BYTES,
    OUTBOX_PATH,
    WEB_FETCH_PATH,
    WORKSPACE,
    clean_text,
    file_path,
)

__all__ = ["MAX_OUTPUT", "TOOLS", "TOOL_SCHEMAS", "ToolError", "resolve_inside", "run_tool"]

DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 600

ToolFn = Callable[[dict[str, Any], str], str]
# (method, path, body) -> (status, body): a request on the agent's socket
Api = Callable[[str, str, bytes | None], tuple[int, bytes]]


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
            with stopping.running(process.pid):
                code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            output.seek(0)
            partial = output.read().decode(errors="replace")
            raise ToolError(f"timed out after {timeout}s\n{clip(partial)}") from None
        output.seek(0)
        text = output.read().decode(errors="replace")
    return f"exit_code: {code}\n{clip(text)}"


# -- scheduled jobs, kept by the orchestrator (through the socket) -----------------------------


def _call(api: Api | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    if api is None:
        raise ToolError("the orchestrator cannot be reached from here")
    raw = None if body is None else json.dumps(body).encode()
    try:
        status, answer = api(method, path, raw)
    except OSError as exc:
        raise ToolError(f"the orchestrator did not answer ({exc})") from None
    try:
        data = json.loads(answer) if answer else {}
    except ValueError:
        data = {}
    if status >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        raise ToolError(f"refused ({status}): {error or answer[:300].decode(errors='replace')}")
    return data


def schedule_job(args: dict[str, Any], api: Api | None) -> str:
    """Create a job that answers in this chat."""
    keys = ("name", "task", "schedule", "every", "at", "timezone")
    job = _call(api, "POST", JOBS_PATH, {k: args[k] for k in keys if args.get(k) is not None})
    return (
        f"scheduled {job['name']} ({job['schedule']}, {job['timezone']});"
        f" next run {job['next_run'] or '-'}; answers go to this chat"
    )


def list_jobs(args: dict[str, Any], api: Api | None) -> str:
    jobs = _call(api, "GET", JOBS_PATH)["jobs"]
    lines = [
        f"{j['name']}: {j['schedule']} ({j['timezone']}), {j['state']}, next {j['next_run'] or '-'}"
        f", to {j['deliver_to']}: {j['task']}"
        for j in jobs
    ]
    return "\n".join(lines) or "(no jobs)"


def cancel_job(args: dict[str, Any], api: Api | None) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise ToolError("cancel_job needs the job's 'name'")
    _call(api, "DELETE", f"{JOBS_PATH}/{quote(name, safe='')}")
    return f"cancelled {name}"


# -- memory: facts kept across conversations (memory.py) ----------------------------------------


def _memory_call(action: str, args: dict[str, Any], root: str) -> str:
    memory = Memory(root)
    try:
        if action == "get":
            value = memory.get(args.get("key"))  # type: ignore[arg-type]
            return value if value is not None else f"(no memory under {args.get('key')!r})"
        if action == "set":
            memory.set(args.get("key"), args.get("value"))  # type: ignore[arg-type]
            return f"remembered {args['key']!r}"
        if action == "delete":
            gone = memory.delete(args.get("key"))  # type: ignore[arg-type]
            return f"forgot {args['key']!r}" if gone else f"(no memory under {args['key']!r})"
        prefix = args.get("prefix", "")
        keys = memory.keys(prefix if isinstance(prefix, str) else "")
        return "\n".join(keys) or "(no memories)"
    except MemoryRefused as exc:
        raise ToolError(str(exc)) from None
    except OSError as exc:
        raise ToolError(f"memory could not be written: {exc.strerror}") from None


def memory_get(args: dict[str, Any], root: str = WORKSPACE) -> str:
    return _memory_call("get", args, root)


def memory_set(args: dict[str, Any], root: str = WORKSPACE) -> str:
    return _memory_call("set", args, root)


def memory_delete(args: dict[str, Any], root: str = WORKSPACE) -> str:
    return _memory_call("delete", args, root)


def memory_list(args: dict[str, Any], root: str = WORKSPACE) -> str:
    return _memory_call("list", args, root)


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
        "description": "Read a text file under /workspace; offset/limit (lines, from 1) read "
        "a numbered slice of a long one.",
        "input_schema": _schema(
            {
                "path": {"type": "string"},
                "offset": {"type": "integer"},
                "limit": {"type": "integer"},
            },
            ["path"],
        ),
    },
    {
        "name": "write_file",
        "description": "Create or replace a text file under /workspace.",
        "input_schema": _schema(
            {"path": {"type": "string"}, "content": {"type": "string"}}, ["path", "content"]
        ),
    },
    {
        "name": "edit_file",
        "description": "Replace an exact string in a file under /workspace. old_string must "
        "occur exactly once (include surrounding lines), unless replace_all is true.",
        "input_schema": _schema(
            {
                "path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            ["path", "old_string", "new_string"],
        ),
    },
    {
        "name": "list_files",
        "description": "List a directory under /workspace.",
        "input_schema": _schema({"path": {"type": "string"}}, []),
    },
    {
        "name": "glob",
        "description": "Find files under /workspace by pattern, e.g. '**/*.py'.",
        "input_schema": _schema(
            {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "Directory to search, default ."},
            },
            ["pattern"],
        ),
    },
    {
        "name": "grep",
        "description": "Search file contents under /workspace with a regular expression; "
        "answers path:line: text.",
        "input_schema": _schema(
            {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "File or directory, default ."},
                "include": {"type": "string", "description": "File name filter, e.g. *.md"},
                "ignore_case": {"type": "boolean"},
            },
            ["pattern"],
        ),
    },
    {
        "name": "memory_set",
        "description": "Remember a fact under a key, across conversations and restarts "
        f"(e.g. key 'user.birthday'). Keys up to {MAX_KEY_CHARS} characters, values up to "
        f"{MAX_VALUE_CHARS}.",
        "input_schema": _schema(
            {"key": {"type": "string"}, "value": {"type": "string"}}, ["key", "value"]
        ),
    },
    {
        "name": "memory_get",
        "description": "Recall the value remembered under a key.",
        "input_schema": _schema({"key": {"type": "string"}}, ["key"]),
    },
    {
        "name": "memory_delete",
        "description": "Forget a key.",
        "input_schema": _schema({"key": {"type": "string"}}, ["key"]),
    },
    {
        "name": "memory_list",
        "description": "List the keys you remember, optionally those starting with a prefix.",
        "input_schema": _schema({"prefix": {"type": "string"}}, []),
    },
]

_WHEN = "Exactly one of schedule, every or at."
TOOL_SCHEMAS += [
    {
        "name": "schedule_job",
        "description": "Schedule a task you will be given again later; your answer then is "
        "sent to this chat. E.g. every weekday at 8: schedule '0 8 * * 1-5'. " + _WHEN,
        "input_schema": _schema(
            {
                "name": {"type": "string", "description": "Short unique name, e.g. standup"},
                "task": {"type": "string", "description": "What to do when it runs"},
                "schedule": {"type": "string", "description": "Cron, 5 fields"},
                "every": {"type": "string", "description": "An interval: 30m, 2h, 1d"},
                "at": {"type": "string", "description": "Once: 2026-12-01T09:00"},
                "timezone": {"type": "string", "description": "IANA zone, default UTC"},
            },
            ["name", "task"],
        ),
    },
    {
        "name": "list_jobs",
        "description": "List your scheduled jobs with their next runs.",
        "input_schema": _schema({}, []),
    },
    {
        "name": "cancel_job",
        "description": "Cancel a scheduled job you created.",
        "input_schema": _schema({"name": {"type": "string"}}, ["name"]),
    },
]
JOB_TOOLS: dict[str, Callable[[dict[str, Any], Api | None], str]] = {
    "schedule_job": schedule_job,
    "list_jobs": list_jobs,
    "cancel_job": cancel_job,
}

# -- reaching out, through the orchestrator (the container has no network) ---------------------


def send_message(args: dict[str, Any], api: Api | None) -> str:
    """Send a message now, before the final answer, or to another chat paired with this agent."""
    text = args.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ToolError("send_message needs a non-empty string 'text'")
    to = args.get("to")
    if to is not None and not isinstance(to, str):
        raise ToolError("'to' must be a chat address such as telegram:123")
    body: dict[str, Any] = {"text": clean_text(text, MAX_SEND_CHARS)}
    if to:
        body["to"] = to
    sent = _call(api, "POST", OUTBOX_PATH, body)
    return f"sent to {sent.get('to', 'the chat')}"


def web_fetch(args: dict[str, Any], api: Api | None) -> str:
    """Read a public web page as text (the orchestrator fetches it)."""
    url = args.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ToolError("web_fetch needs a string 'url'")
    max_chars = args.get("max_chars", 20_000)
    if type(max_chars) is not int or not 1 <= max_chars <= MAX_FETCH_CHARS:
        max_chars = 20_000
    page = _call(api, "POST", WEB_FETCH_PATH, {"url": url, "max_chars": max_chars})
    cut = " (cut: the page is longer)" if page.get("truncated") else ""
    return (
        f"{page.get('url')} -> HTTP {page.get('status')}, {page.get('content_type')}{cut}\n\n"
        f"{page.get('text', '')}"
    )


TOOL_SCHEMAS += [
    {
        "name": "send_message",
        "description": "Send a chat message right away (a progress note before your answer), "
        "or to another chat paired with you. Without 'to' it goes to the chat you are "
        "answering.",
        "input_schema": _schema(
            {
                "text": {"type": "string"},
                "to": {"type": "string", "description": "platform:chat_id, e.g. telegram:123"},
            },
            ["text"],
        ),
    },
    {
        "name": "web_fetch",
        "description": "Fetch a public http(s) URL and read it as text (HTML is converted). "
        "Private and local addresses are refused; the operator may limit the domains.",
        "input_schema": _schema(
            {
                "url": {"type": "string"},
                "max_chars": {"type": "integer", "description": "Default 20000"},
            },
            ["url"],
        ),
    },
]


def read_for_sending(path: str, root: str = WORKSPACE, limit: int = MAX_SEND_FILE_BYTES) -> bytes:
    """The bytes of a regular file under ``root``, read here in the container: resolved first
    (a symlink is followed only as far as it stays inside), opened without following a link
    swapped in since, refused unless a regular file (not a FIFO, a device, a directory), and
    refused by its size before it is read (a 2 GB sparse file costs nothing)."""
    if path == WORKSPACE or path.startswith(WORKSPACE + "/"):  # the same place, wherever root is
        path = path[len(WORKSPACE) :].lstrip("/") or "."
    target = resolve_inside(root, path)
    try:
        descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ToolError(f"cannot open {path!r}: {exc.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{path!r} is not a regular file")
        if info.st_size > limit:
            raise ToolError(
                f"{path!r} is {info.st_size / 1048576:.1f} MB, over the limit of"
                f" {limit // 1048576} MB per file; compress or split it"
            )
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise ToolError(f"{path!r} is over the limit of {limit // 1048576} MB per file")
    if not data:
        raise ToolError(f"{path!r} is empty")
    return data


def send_file(args: dict[str, Any], root: str, api: Api | None) -> str:
    """Send a file under /workspace to the chat being answered; its bytes go over the socket."""
    path = args.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ToolError("send_file needs a string 'path' under /workspace")
    caption = args.get("caption") or ""
    if not isinstance(caption, str):
        raise ToolError("'caption' must be a string")
    data = read_for_sending(path, root)
    name = os.path.basename(path.rstrip("/")) or "file"
    if api is None:
        raise ToolError("the orchestrator cannot be reached from here")
    try:
        status, answer = api("POST", file_path(name, clean_text(caption, MAX_CAPTION_CHARS)), data)
    except OSError as exc:
        raise ToolError(f"the orchestrator did not answer ({exc})") from None
    try:
        sent = json.loads(answer) if answer else {}
    except ValueError:
        sent = {}
    if status >= 400:
        error = sent.get("error") if isinstance(sent, dict) else None
        raise ToolError(f"refused ({status}): {error or answer[:300].decode(errors='replace')}")
    return (
        f"sent {sent.get('name', name)} ({sent.get('media_type', '?')},"
        f" {len(data)} bytes) to {sent.get('to', 'the chat')}"
    )


TOOL_SCHEMAS.append(
    {
        "name": "send_file",
        "description": "Send a file under /workspace (a chart, a PDF) to the chat you answer.",
        "input_schema": _schema(
            {"path": {"type": "string"}, "caption": {"type": "string"}},
            ["path"],
        ),
    }
)
FILE_TOOLS: dict[str, Callable[[dict[str, Any], str, Api | None], str]] = {
    "send_file": send_file,
}

API_TOOLS: dict[str, Callable[[dict[str, Any], Api | None], str]] = {
    **JOB_TOOLS,
    "send_message": send_message,
    "web_fetch": web_fetch,
}

TOOLS: dict[str, ToolFn] = {
    "shell": shell,
    "read_file": read_file,
    "write_file": write_file,
    "edit_file": edit_file,
    "list_files": list_files,
    "glob": glob,
    "grep": grep,
    "memory_get": memory_get,
    "memory_set": memory_set,
    "memory_delete": memory_delete,
    "memory_list": memory_list,
}


def run_tool(
    name: str, args: dict[str, Any], root: str = WORKSPACE, api: Api | None = None
) -> tuple[str, bool]:
    """Run one tool call; returns (text, is_error)."""
    tool = TOOLS.get(name)
    job_tool = API_TOOLS.get(name)
    file_tool = FILE_TOOLS.get(name)
    if tool is None and job_tool is None and file_tool is None:
        return f"unknown tool {name!r}", True
    try:
        if file_tool is not None:
            return file_tool(args, root, api), False
        return (tool(args, root) if tool else job_tool(args, api)), False  # type: ignore[misc]
    except ToolError as exc:
        return str(exc), True
