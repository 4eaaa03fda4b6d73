"""The wire format of the per-agent socket: the one module both sides import.

The orchestrator serves HTTP/1.1 on a Unix socket that is bind-mounted into the agent's
container at ``SOCKET_PATH``. Whoever can reach that socket *is* that agent: there are no
tokens. Three routes matter:

``GET  /v1/tasks/next``         held open until a task exists, then answered (push, no polling)
``POST /v1/tasks/{id}/result``  the agent's answer to one task
``POST /v1/messages``           the Anthropic-compatible model proxy (the key is added outside)

Standard library only: this module runs inside the container too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SOCKET_DIR = "/run/clawpen"
SOCKET_NAME = "agent.sock"
SOCKET_PATH = f"{SOCKET_DIR}/{SOCKET_NAME}"
WORKSPACE = "/workspace"
AGENT_UID = 10001

NEXT_TASK_PATH = "/v1/tasks/next"
MESSAGES_PATH = "/v1/messages"


def result_path(task_id: int) -> str:
    return f"/v1/tasks/{task_id}/result"


@dataclass(frozen=True)
class ChatLine:
    """One inbound chat message as the agent sees it."""

    sender: str
    text: str


@dataclass(frozen=True)
class Task:
    """Work pushed to an agent: the new chat lines of one conversation, answered in one turn."""

    id: int
    conversation: str
    lines: list[ChatLine]
    model: str
    system_prompt: str = ""
    max_tokens: int = 4096

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Task:
        data: dict[str, Any] = json.loads(raw)
        data["lines"] = [ChatLine(**line) for line in data["lines"]]
        return cls(**data)


@dataclass(frozen=True)
class TaskResult:
    """The agent's answer: ``text`` for the chat, or ``error`` when the turn failed."""

    text: str = ""
    error: str | None = None
    tool_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> TaskResult:
        return cls(**json.loads(raw))
