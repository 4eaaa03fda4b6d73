"""The wire format of the per-agent socket: the one module both sides import.

The orchestrator serves HTTP/1.1 on a Unix socket that is bind-mounted into the agent's
container at ``SOCKET_PATH``. Whoever can reach that socket *is* that agent: there are no
tokens. Three routes matter:

``GET  /v1/tasks/next``         held open until a task exists, then answered (push, no polling)
``POST /v1/tasks/{id}/result``  the agent's answer to one task
``POST /v1/messages``           the Anthropic-compatible model proxy (the key is added outside)

Whatever arrives on the socket may have been written by code the agent was tricked into running,
so the orchestrator checks every body with the pure functions below before it acts on it, and an
honest agent cleans what it sends so that it never trips them (``TaskResult.sanitized``).

Standard library only: this module runs inside the container too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

SOCKET_DIR = "/run/clawpen"
SOCKET_NAME = "agent.sock"
SOCKET_PATH = f"{SOCKET_DIR}/{SOCKET_NAME}"
WORKSPACE = "/workspace"
AGENT_UID = 10001

NEXT_TASK_PATH = "/v1/tasks/next"
STOPPED_TASKS_PATH = "/v1/tasks/stopped"  # held open: the tasks the user stopped
TASK_HEADER = "clawpen-task"  # on a tool call to the orchestrator: the task it is made for
MESSAGES_PATH = "/v1/messages"


MAX_RESULT_BYTES = 1024 * 1024  # a reply is cut at 64,000 characters anyway
MAX_TEXT_CHARS = 100_000
MAX_ERROR_CHARS = 10_000
MAX_TOOL_CALLS = 1_000_000
MAX_EXTRA_KEYS = 16
MAX_EXTRA_KEY_CHARS = 64
MAX_EXTRA_TEXT_CHARS = 256
# A Messages API request from the agent holds a few thousand JSON values. The bound keeps the
# time and memory of parsing one body small (500,000 empty objects: ~40 ms, ~36 MB).
MAX_JSON_VALUES = 500_000
MAX_INT = 2**63 - 1  # what SQLite stores

_TASK_ID = re.compile(r"[0-9]{1,18}")
_UNSAFE_CHARS = re.compile("[\x00\ud800-\udfff]")  # NUL, and lone surrogates (not UTF-8)
_SURROGATES = re.compile("[\ud800-\udfff]")


def result_path(task_id: int, then_next: bool = False) -> str:
    """Where a result goes. ``then_next``: the answer to it is the agent's next task, held
    until one exists, exactly as ``GET /v1/tasks/next`` would be (one exchange per task, not
    two)."""
    return f"/v1/tasks/{task_id}/result" + ("?next=1" if then_next else "")


def is_task(body: bytes) -> bool:
    """Whether an answer carries a task (rather than an acknowledgement or an error)."""
    return body.startswith(b"{") and b'"lines"' in body


class ProtocolError(ValueError):
    """A body or path that breaks the wire format. The message is one line, names the field
    and never echoes the value, so it is safe to send back and to log."""


def parse_task_id(raw: str) -> int:
    """``"42"`` -> 42; anything but 1 to 18 ASCII digits is refused."""
    if not _TASK_ID.fullmatch(raw):
        raise ProtocolError("the task id in the path must be a number")
    return int(raw)


def parse_json(raw: bytes, max_values: int = MAX_JSON_VALUES) -> Any:
    """Strict JSON: UTF-8 only (the bytes of a lone surrogate are refused), no NaN or Infinity,
    no deeper nesting than the interpreter's recursion limit, and at most ``max_values`` values,
    counted before parsing as an upper bound (every value but the first follows a comma or
    opens a container), so that a body cannot cost more than that to parse."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"the body is not UTF-8 (at byte {exc.start})") from None
    if 1 + text.count(",") + text.count("[") + text.count("{") > max_values:
        raise ProtocolError(f"the body has more than {max_values} JSON values")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ProtocolError("the body is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"the body is not JSON ({str(exc).splitlines()[0]})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string, not {_kind(value)}")
    if len(value) > limit:
        raise ProtocolError(f"{name} is over {limit} characters")
    if _UNSAFE_CHARS.search(value):
        raise ProtocolError(f"{name} holds a NUL or a lone surrogate; send valid Unicode text")
    return value


def check_result(data: Any) -> TaskResult:
    """The agent's parsed result body -> a ``TaskResult`` whose every field the store can take.
    Unknown keys are refused: a typo must not silently drop an answer."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a result must be a JSON object, not {_kind(data)}")
    unknown = sorted(set(data) - {"text", "error", "tool_calls", "extra"})
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0][:MAX_EXTRA_KEY_CHARS]!r} in the result")
    error = data.get("error")
    tool_calls = data.get("tool_calls", 0)
    if type(tool_calls) is not int or not 0 <= tool_calls <= MAX_TOOL_CALLS:
        raise ProtocolError(f"tool_calls must be an integer from 0 to {MAX_TOOL_CALLS}")
    return TaskResult(
        text=check_text(data.get("text", ""), "text", MAX_TEXT_CHARS),
        error=None if error is None else check_text(error, "error", MAX_ERROR_CHARS),
        tool_calls=tool_calls,
        extra=check_extra(data.get("extra", {})),
    )


def check_extra(extra: Any) -> dict[str, Any]:
    """A few named JSON scalars (timings, counts): never a container."""
    if not isinstance(extra, dict):
        raise ProtocolError(f"extra must be a JSON object, not {_kind(extra)}")
    if len(extra) > MAX_EXTRA_KEYS:
        raise ProtocolError(f"extra has more than {MAX_EXTRA_KEYS} keys")
    for key, value in extra.items():
        check_text(key, "a key of extra", MAX_EXTRA_KEY_CHARS)
        if isinstance(value, str):
            check_text(value, f"extra.{key}", MAX_EXTRA_TEXT_CHARS)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"extra.{key} must be a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ProtocolError(f"extra.{key} is out of range")
        elif value is not None and not isinstance(value, bool | int | float | str):
            raise ProtocolError(f"extra.{key} must be a string, number, boolean or null")
    return extra


def clean_text(text: str, limit: int) -> str:
    """What an honest agent sends: lone surrogates become U+FFFD, NULs go, at most ``limit``
    characters. ``clean_text("a\x00b\ud800", 10) == "ab\ufffd"``"""
    return _SURROGATES.sub("\ufffd", text.replace("\x00", ""))[:limit]


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


@dataclass(frozen=True)
class ChatLine:
    """One inbound chat message as the agent sees it."""

    sender: str
    text: str


@dataclass(frozen=True)
class InboxFile:
    """A file a user sent, for the agent to save as ``/workspace/inbox/<name>``."""

    name: str  # a plain file name, chosen by the orchestrator
    media_type: str
    data: str  # base64


@dataclass(frozen=True)
class Task:
    """Work pushed to an agent: the new chat lines of one conversation, answered in one turn."""

    id: int
    conversation: str
    lines: list[ChatLine]
    model: str
    system_prompt: str = ""
    max_tokens: int = 4096
    files: list[InboxFile] = field(default_factory=list)
    session: int = 0  # the chat's session number: another than the agent's file starts afresh
    max_steps: int = 0  # model calls per task (0: the agent's default)
    max_task_tokens: int = 0  # input (cached too) plus output tokens per task (0: no limit)
    time_limit: float = 0  # seconds the agent may work on it before it stops (0: no limit)
    context_tokens: int = 200_000  # the model's context window: history compacts at half
    trace: str = ""  # W3C traceparent of the task's span: sent back with each model call
    # MCP servers: {"name", "command": [...], "env": {...}} run here (stdio), or
    # {"name", "remote": true}, whose tools the orchestrator lists and calls (``MCP_*_PATH``)
    mcp_servers: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Task:
        data: dict[str, Any] = json.loads(raw)
        data["lines"] = [ChatLine(**line) for line in data["lines"]]
        data["files"] = [InboxFile(**file) for file in data.get("files", [])]
        return cls(**data)


@dataclass(frozen=True)
class TaskResult:
    """The agent's answer: ``text`` for the chat, or ``error`` when the turn failed."""

    text: str = ""
    error: str | None = None
    tool_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TaskResult:
        """Checked as the orchestrator checks it; raises ``ProtocolError``."""
        return check_result(parse_json(raw))

    def sanitized(self) -> TaskResult:
        """This result in a form the orchestrator accepts: text cleaned and cut to size."""
        error = None if self.error is None else clean_text(self.error, MAX_ERROR_CHARS)
        return replace(self, text=clean_text(self.text, MAX_TEXT_CHARS), error=error)


# -- tracing: the tool calls run since the last model call, told with the next one ----------------

TOOL_CALLS_HEADER = "clawpen-tool-calls"
MAX_TRACED_TOOLS = 32
_TOOL_CALL = re.compile(r"([a-z_]{1,32})=(\d{1,12}(?:\.\d{1,6})?),(\d{1,12}(?:\.\d{1,6})?)")


def format_tool_calls(calls: list[tuple[str, float, float]]) -> str:
    """``shell=1700000000.125,1700000000.5;read_file=...``: name, wall-clock start and end."""
    return ";".join(f"{n}={a:.6f},{b:.6f}" for n, a, b in calls[-MAX_TRACED_TOOLS:])


def parse_tool_calls(header: str) -> list[tuple[str, float, float]]:
    """The header as the orchestrator reads it: whatever does not match is left out."""
    calls = []
    for part in header.split(";")[:MAX_TRACED_TOOLS]:
        found = _TOOL_CALL.fullmatch(part.strip())
        if found and float(found.group(2)) <= float(found.group(3)):
            calls.append((found.group(1), float(found.group(2)), float(found.group(3))))
    return calls


# -- scheduled jobs: ``POST /v1/jobs``, ``GET /v1/jobs``, ``DELETE /v1/jobs/{name}`` -------------

JOBS_PATH = "/v1/jobs"
MAX_JOB_BODY_BYTES = 16 * 1024
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_JOB_KEYS = {"name", "task", "schedule", "every", "at", "timezone"}


@dataclass(frozen=True)
class JobRequest:
    """An agent asking for a job of its own; the orchestrator decides where it delivers (the
    chat of the task the agent is working on) and whether the schedule is allowed."""

    name: str
    task: str
    schedule: str | None = None  # cron, five fields
    every: str | None = None  # "15m", "1h30m"
    at: str | None = None  # "2026-12-01T09:00"
    timezone: str = "UTC"

    def to_json(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}).encode()


def parse_job_name(raw: str) -> str:
    """A job's name in a path: letters, digits, ``.``, ``_`` or ``-``, at most 64."""
    if not _JOB_NAME.fullmatch(raw):
        raise ProtocolError("a job name is 1 to 64 letters, digits, '.', '_' or '-'")
    return raw


def check_job_request(data: Any) -> JobRequest:
    """The agent's parsed job body -> a ``JobRequest`` of bounded, typed fields."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a job must be a JSON object, not {_kind(data)}")
    unknown = sorted(set(data) - _JOB_KEYS)
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0][:MAX_EXTRA_KEY_CHARS]!r} in the job")
    name = parse_job_name(check_text(data.get("name"), "name", 64))
    when = {k: check_text(data[k], k, 200) for k in ("schedule", "every", "at") if k in data}
    if len(when) != 1:
        raise ProtocolError("give exactly one of schedule (cron), every or at")
    return JobRequest(
        name=name,
        task=check_text(data.get("task"), "task", 4000),
        timezone=check_text(data.get("timezone", "UTC"), "timezone", 64),
        **when,
    )


# -- reaching out: ``POST /v1/outbox`` (send_message), ``POST /v1/web/fetch`` (web_fetch) ------
# Egress is not a route: it is a second socket in the same directory, ``EGRESS_SOCKET_NAME``,
# that speaks HTTP proxy (CONNECT host:port, or an absolute-form http:// request). Inside the
# container a loopback forwarder on ``127.0.0.1:EGRESS_PORT`` relays to it.

OUTBOX_PATH = "/v1/outbox"
WEB_FETCH_PATH = "/v1/web/fetch"
EGRESS_SOCKET_NAME = "egress.sock"
EGRESS_PORT = 3128
MAX_SEND_BODY_BYTES = 64 * 1024
MAX_SEND_CHARS = 20_000
MAX_FETCH_CHARS = 100_000
_CHAT_ADDRESS = re.compile(r"[a-z][a-z0-9_]{0,31}:[^\s]{1,200}")


@dataclass(frozen=True)
class OutgoingMessage:
    """A message the agent sends on its own: to ``to`` (``platform:chat_id``), or, when it is
    None, to the chat of the task it is answering. The orchestrator decides whether it may."""

    text: str
    to: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}).encode()


def check_outgoing(data: Any) -> OutgoingMessage:
    """The agent's parsed send_message body -> an ``OutgoingMessage`` of bounded fields."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a message must be a JSON object, not {_kind(data)}")
    unknown = sorted(set(data) - {"text", "to"})
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0][:MAX_EXTRA_KEY_CHARS]!r} in the message")
    text = check_text(data.get("text"), "text", MAX_SEND_CHARS)
    if not text.strip():
        raise ProtocolError("text is empty")
    to = data.get("to")
    if to is not None:
        to = check_text(to, "to", 240)
        if not _CHAT_ADDRESS.fullmatch(to):
            raise ProtocolError("to must be a chat address, platform:chat_id (telegram:123)")
    return OutgoingMessage(text=text, to=to)


@dataclass(frozen=True)
class FetchRequest:
    """A URL the agent wants read; the orchestrator fetches it (the container has no network)."""

    url: str
    max_chars: int = 20_000

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()


def check_fetch_request(data: Any) -> FetchRequest:
    if not isinstance(data, dict):
        raise ProtocolError(f"a fetch must be a JSON object, not {_kind(data)}")
    unknown = sorted(set(data) - {"url", "max_chars"})
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0][:MAX_EXTRA_KEY_CHARS]!r} in the fetch")
    url = check_text(data.get("url"), "url", 4000)
    max_chars = data.get("max_chars", 20_000)
    if type(max_chars) is not int or not 1 <= max_chars <= MAX_FETCH_CHARS:
        raise ProtocolError(f"max_chars must be an integer from 1 to {MAX_FETCH_CHARS}")
    return FetchRequest(url=url, max_chars=max_chars)


# -- files back: ``POST /v1/files?name=...&caption=...`` (send_file), the bytes as the body ----
# The agent's runtime reads the file inside its container; the host never opens a path the agent
# named. The orchestrator checks the size against the platform's limit before reading the body.

FILES_PATH = "/v1/files"
MAX_SEND_FILE_BYTES = 100 * 1024 * 1024  # the largest any platform takes (Slack's, as we cap it)
MAX_FILE_NAME_CHARS = 255
MAX_CAPTION_CHARS = 1024  # Telegram's caption limit, the smallest of the platforms'


def file_path(name: str, caption: str = "") -> str:
    """The route with the file's name and caption in its query."""
    query = {"name": name, **({"caption": caption} if caption else {})}
    return f"{FILES_PATH}?{urlencode(query)}"


def check_file_query(query: Any) -> tuple[str, str]:
    """The agent's query (a mapping of strings) -> (name, caption), bounded; the name is
    cleaned to a plain one by the orchestrator after this."""
    unknown = sorted(set(query) - {"name", "caption"})
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0][:MAX_EXTRA_KEY_CHARS]!r} in the query")
    name = check_text(query.get("name"), "name", MAX_FILE_NAME_CHARS)
    if not name.strip():
        raise ProtocolError("name is empty")
    caption = check_text(query.get("caption", ""), "caption", MAX_CAPTION_CHARS)
    return name, caption


# -- MCP: remote servers' tools, through the orchestrator (which holds their credentials) -------
# ``GET /v1/mcp/tools`` -> {"tools": [{"name": "SERVER__tool", "description", "input_schema"}]}
# ``POST /v1/mcp/call`` {"name": "SERVER__tool", "arguments": {...}} -> {"text", "is_error"}

MCP_TOOLS_PATH = "/v1/mcp/tools"
MCP_CALL_PATH = "/v1/mcp/call"
MCP_SEPARATOR = "__"  # SERVER__tool: how an MCP server's tool is named to the model
MAX_MCP_BODY_BYTES = 1024 * 1024
_MCP_TOOL = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}__[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class McpCall:
    name: str  # SERVER__tool
    arguments: dict[str, Any]

    @property
    def server(self) -> str:
        return self.name.split(MCP_SEPARATOR, 1)[0]

    @property
    def tool(self) -> str:
        return self.name.split(MCP_SEPARATOR, 1)[1]


def check_mcp_call(data: Any) -> McpCall:
    if not isinstance(data, dict):
        raise ProtocolError(f"an MCP call must be a JSON object, not {_kind(data)}")
    unknown = sorted(set(data) - {"name", "arguments"})
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0][:MAX_EXTRA_KEY_CHARS]!r} in the call")
    name = check_text(data.get("name"), "name", 100)
    if not _MCP_TOOL.fullmatch(name):
        raise ProtocolError("name must be SERVER__tool")
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ProtocolError(f"arguments must be a JSON object, not {_kind(arguments)}")
    return McpCall(name, arguments)
