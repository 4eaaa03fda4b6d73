"""The tool-use loop: ask the model, run the tools it asks for, repeat until it answers.

Conversation history lives in /workspace so that it survives container restarts and is never
seen by another agent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .inbox import save_files, user_content
from .protocol import MESSAGES_PATH, Task, TaskResult
from .tools import TOOL_SCHEMAS, Api, run_tool
from .transport import HTTPError

MAX_STEPS = 25
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
HISTORY_MESSAGES = 40
NOTES_FILE = "CLAUDE.md"
MAX_NOTES = 20_000

ModelCall = Callable[[dict[str, Any]], dict[str, Any]]
ToolTimer = Callable[[str, float, float], None]  # a tool's name, its start and end (wall clock)


class History:
    """Per-conversation message history as a JSON file under the workspace."""

    def __init__(self, root: str) -> None:
        self.dir = Path(root) / ".clawpen" / "conversations"

    def _path(self, conversation: str) -> Path:
        return self.dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", conversation) + ".json")

    def load(self, conversation: str) -> list[dict[str, Any]]:
        try:
            data: list[dict[str, Any]] = json.loads(self._path(conversation).read_text())
        except (OSError, ValueError):
            return []
        return data

    def save(self, conversation: str, messages: list[dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(conversation)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(trim_history(messages)))
        tmp.replace(path)


def trim_history(
    messages: list[dict[str, Any]], keep: int = HISTORY_MESSAGES
) -> list[dict[str, Any]]:
    """Keep about the last ``keep`` messages, starting at a plain user turn so that tool-use
    pairs stay whole; a single turn longer than ``keep`` is kept whole."""
    if len(messages) <= keep:
        return messages
    starts = [
        i for i, m in enumerate(messages) if m["role"] == "user" and isinstance(m["content"], str)
    ]
    within = [i for i in starts if i >= len(messages) - keep]
    if within:
        return messages[within[0] :]
    return messages[starts[-1] :] if starts else messages


def user_turn(task: Task) -> str:
    if len(task.lines) == 1:
        return task.lines[0].text
    return "\n".join(f"[{line.sender}] {line.text}" for line in task.lines)


def system_prompt(configured: str, root: str) -> str:
    """The configured prompt plus the agent's own notes: a memory that outlives conversations,
    which the agent keeps itself with its file tools."""
    try:
        notes = (Path(root) / NOTES_FILE).read_text(errors="replace")[:MAX_NOTES]
    except OSError:
        notes = ""
    parts = [configured] if configured else []
    if notes.strip():
        parts.append(
            f"Your notes, kept in /workspace/{NOTES_FILE} (update them with write_file):\n{notes}"
        )
    return "\n\n".join(parts)


def run_task(
    task: Task,
    call_model: ModelCall,
    history: History,
    root: str,
    api: Api | None = None,
    on_tool: ToolTimer | None = None,
) -> TaskResult:
    """Run one task to its final text. Tool failures go back to the model, not to the user."""
    earlier = history.load(task.conversation)
    text = user_turn(task)
    content = user_content(text, save_files(task.files, root))
    messages = [*earlier, {"role": "user", "content": content}]
    result = _turn(task, messages, call_model, root, api, on_tool)
    messages[len(earlier)] = {"role": "user", "content": text}  # the text names the files
    history.save(task.conversation, messages)
    return result


def _turn(
    task: Task,
    messages: list[dict[str, Any]],
    call_model: ModelCall,
    root: str,
    api: Api | None = None,
    on_tool: ToolTimer | None = None,
) -> TaskResult:
    """Ask, run tools, ask again, until the model answers; ``messages`` grows as it goes."""
    system = system_prompt(task.system_prompt, root)
    tool_calls = 0
    for _ in range(MAX_STEPS):
        request: dict[str, Any] = {
            "model": task.model,
            "max_tokens": task.max_tokens,
            "messages": messages,
            "tools": TOOL_SCHEMAS,
        }
        if system:
            request["system"] = system
        response = call_model(request)
        content = response.get("content", [])
        messages.append({"role": "assistant", "content": content})
        uses = [block for block in content if block.get("type") == "tool_use"]
        if response.get("stop_reason") != "tool_use" or not uses:
            text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
            return TaskResult(text=text.strip() or "(no answer)", tool_calls=tool_calls)
        results = []
        for use in uses:
            tool_calls += 1
            began = time.time()
            output, is_error = run_tool(use["name"], use.get("input") or {}, root, api)
            if on_tool is not None:
                on_tool(str(use["name"]), began, time.time())
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": use["id"],
                    "content": output,
                    "is_error": is_error,
                }
            )
        messages.append({"role": "user", "content": results})
    return TaskResult(error=f"gave up after {MAX_STEPS} model calls without a final answer")


def model_caller(
    post_json: Callable[[str, dict[str, Any]], Any],
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = 4,
) -> ModelCall:
    """Calls the model through the proxy, retrying what the Anthropic SDK would retry
    (rate limits, overload, server errors) with exponential backoff."""

    def call(request: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(attempts):
            try:
                response: dict[str, Any] = post_json(MESSAGES_PATH, request)
                return response
            except HTTPError as exc:
                if exc.status not in RETRIED_STATUSES or attempt == attempts - 1:
                    raise
                sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    return call
