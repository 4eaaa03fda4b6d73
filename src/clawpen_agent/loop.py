"""The tool-use loop: ask the model, run the tools it asks for, repeat until it answers.

Each chat's conversation lives in /workspace (``session.py``) so that it survives container
restarts and is never seen by another agent; near the context limit its older turns are
summarised by the model (``compact.py``). Every request marks three cache breakpoints (tools,
system prompt, the conversation so far), so a turn re-reads its history from the prompt cache
instead of paying for it again. A task ends within its limits (steps, tokens, time) with a
message that says which one it hit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stopping
from .compact import compact, needs_compaction
from .inbox import save_files, user_content
from .mcp import McpTools
from .memory import Memory
from .protocol import MESSAGES_PATH, Task, TaskResult
from .session import Conversation, Sessions
from .tools import API_TOOLS, TOOL_SCHEMAS, Api, run_tool
from .transport import HTTPError

MAX_STEPS = 25  # when the task does not say
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
NOTES_FILE = "CLAUDE.md"
MAX_NOTES = 20_000
MAX_MEMORY_KEYS_SHOWN = 100
EPHEMERAL = {"type": "ephemeral"}

ModelCall = Callable[[dict[str, Any]], dict[str, Any]]
Log = Callable[[str], None]
ToolTimer = Callable[[str, float, float], None]  # a tool's name, its start and end (wall clock)


def user_turn(task: Task) -> str:
    if len(task.lines) == 1:
        return task.lines[0].text
    return "\n".join(f"[{line.sender}] {line.text}" for line in task.lines)


def system_prompt(configured: str, root: str, summary: str = "") -> str:
    """The configured prompt, the agent's own notes (a memory that outlives conversations,
    which it keeps with its file tools), the keys of its memory, and the summary of this
    conversation's compacted turns. What changes least comes first."""
    try:
        notes = (Path(root) / NOTES_FILE).read_text(errors="replace")[:MAX_NOTES]
    except OSError:
        notes = ""
    parts = [configured] if configured else []
    if notes.strip():
        parts.append(
            f"Your notes, kept in /workspace/{NOTES_FILE} (update them with write_file):\n{notes}"
        )
    keys = Memory(root).keys()
    if keys:
        shown = ", ".join(keys[:MAX_MEMORY_KEYS_SHOWN])
        more = f" and {len(keys) - MAX_MEMORY_KEYS_SHOWN} more" if len(keys) > 100 else ""
        parts.append(f"Your memory holds (read with memory_get): {shown}{more}")
    if summary:
        parts.append(f"Summary of this conversation before the messages below:\n{summary}")
    return "\n\n".join(parts)


def with_cache_breakpoints(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with ``cache_control`` on the last tool, the system prompt and the last
    block of the last message: the API caches each prefix, and the next call (which repeats
    them and adds to the end) reads them back at a tenth of the price. The conversation kept
    in history is not touched."""
    marked = dict(request)
    if request.get("tools"):
        tools = list(request["tools"])
        tools[-1] = {**tools[-1], "cache_control": EPHEMERAL}
        marked["tools"] = tools
    if request.get("system"):
        marked["system"] = [{"type": "text", "text": request["system"], "cache_control": EPHEMERAL}]
    messages = list(request["messages"])
    if messages:
        last = messages[-1]
        content = last["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if blocks:
            blocks = [*blocks[:-1], {**blocks[-1], "cache_control": EPHEMERAL}]
            messages[-1] = {**last, "content": blocks}
    marked["messages"] = messages
    return marked


def prompt_tokens(usage: dict[str, Any]) -> int:
    """The whole prompt of a call: uncached, written to the cache and read from it."""
    return sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def run_task(
    task: Task,
    call_model: ModelCall,
    sessions: Sessions,
    root: str,
    api: Api | None = None,
    clock: Callable[[], float] = time.monotonic,
    log: Log = lambda _: None,
    on_tool: ToolTimer | None = None,
) -> TaskResult:
    """Run one task to its final text. Tool failures go back to the model, not to the user."""
    state = sessions.load(task.conversation, task.session)
    if needs_compaction(state, task.context_tokens):
        state, outcome = compact(state, task.context_tokens, task.model, call_model)
        log(f"conversation {task.conversation}: {outcome} older turns")
    earlier = len(state.messages)
    text = user_turn(task)
    content = user_content(text, save_files(task.files, root))
    state.messages.append({"role": "user", "content": content})
    mcp = McpTools(task.mcp_servers, api, root) if task.mcp_servers else None
    for problem in mcp.problems if mcp else []:
        log(f"mcp: {problem}")
    result = _Turn(task, state, call_model, root, api, clock, on_tool, mcp).run()
    state.messages[earlier] = {"role": "user", "content": text}  # the text names the files
    sessions.save(task.conversation, state)
    return result


@dataclass
class _Turn:
    """Ask, run tools, ask again, until the model answers or a limit is hit;
    ``state.messages`` grows as it goes."""

    task: Task
    state: Conversation
    call_model: ModelCall
    root: str
    api: Api | None
    clock: Callable[[], float]
    on_tool: ToolTimer | None = None  # tells tracing which tools ran, and when
    mcp: McpTools | None = None  # the task's MCP servers' tools (SERVER__tool)

    def run(self) -> TaskResult:
        task, messages = self.task, self.state.messages
        started = self.clock()
        system = system_prompt(task.system_prompt, self.root, self.state.summary)
        max_steps = task.max_steps or MAX_STEPS
        tool_calls = tokens = 0
        # the orchestrator's tools may wait for a person's approval (its deadline for the task
        # moves meanwhile): that time is not counted against task_timeout here either
        outside = 0.0
        for step in range(max_steps):
            request: dict[str, Any] = {
                "model": task.model,
                "max_tokens": task.max_tokens,
                "messages": messages,
                "tools": TOOL_SCHEMAS + (self.mcp.schemas if self.mcp else []),
            }
            if system:
                request["system"] = system
            response = self.call_model(with_cache_breakpoints(request))
            usage = response.get("usage") or {}
            self.state.prompt_tokens = prompt_tokens(usage) or self.state.prompt_tokens
            tokens += prompt_tokens(usage) + int(usage.get("output_tokens") or 0)
            content = response.get("content", [])
            messages.append({"role": "assistant", "content": content})
            uses = [block for block in content if block.get("type") == "tool_use"]
            if response.get("stop_reason") != "tool_use" or not uses:
                text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
                return TaskResult(text=text.strip() or "(no answer)", tool_calls=tool_calls)
            results = []
            for use in uses:
                tool_calls += 1
                args = use.get("input") or {}
                began = time.time()
                outward = use["name"] in API_TOOLS
                called = self.clock() if outward else 0.0
                if self.mcp is not None and self.mcp.handles(use["name"]):
                    output, is_error = self.mcp.run(use["name"], args)
                else:
                    output, is_error = run_tool(use["name"], args, self.root, self.api)
                if outward:
                    outside += self.clock() - called
                if self.on_tool is not None:
                    self.on_tool(str(use["name"]), began, time.time())
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": use["id"],
                        "content": output,
                        "is_error": is_error,
                    }
                )
            messages.append({"role": "user", "content": results})
            stop = "you stopped it with /stop" if stopping.stopped() else None  # in this chat
            stop = stop or self._limit(
                step + 1, max_steps, tokens, self.clock() - started - outside
            )
            if stop is not None:
                # the history stays well formed: the tool results are answered, with the reason
                messages.append({"role": "assistant", "content": [{"type": "text", "text": stop}]})
                return TaskResult(error=stop, tool_calls=tool_calls)
        raise AssertionError("unreachable: _limit stops at max_steps")

    def _limit(self, steps: int, max_steps: int, tokens: int, elapsed: float) -> str | None:
        """Why the task must stop before asking the model again, if it must."""
        task = self.task
        again = "; ask me to go on and I will pick it up from here"
        if steps >= max_steps:
            return f"I stopped after {steps} steps without finishing (max_steps){again}"
        if task.max_task_tokens and tokens >= task.max_task_tokens:
            return (
                f"I stopped after using {tokens} tokens on this, over the limit of"
                f" {task.max_task_tokens} per task (max_task_tokens){again}"
            )
        if task.time_limit and elapsed >= task.time_limit:
            return (
                f"I stopped after {elapsed:.0f}s, past the limit of {task.time_limit:.0f}s"
                f" per task (task_timeout){again}"
            )
        return None


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
