"""Sessions per chat: resumed, restarted by number, compacted by the model near the context
limit; cache breakpoints on every call; limits that end a task with a message."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from clawpen.demo.model import respond
from clawpen.demo.prompt_cache import PromptCache
from clawpen_agent.compact import SUMMARISE_MARKER
from clawpen_agent.loop import run_task, with_cache_breakpoints
from clawpen_agent.protocol import ChatLine, Task
from clawpen_agent.session import Sessions

from .test_agent_loop import ScriptedModel, text, tool_use


class Fake:
    """The fake model's answers (``fake_model.respond``), called in-process."""

    def __init__(self, now: list[float] | None = None) -> None:
        clock = (lambda: now[0]) if now is not None else (lambda: 0.0)
        self.cache = PromptCache(clock=clock)
        self.requests: list[dict[str, Any]] = []
        self.usage: list[dict[str, int]] = []

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(copy.deepcopy(request))
        answer = respond(request, self.cache)
        self.usage.append(answer["usage"])
        return answer


def task(words: str, task_id: int = 1, **fields: Any) -> Task:
    fields.setdefault("conversation", "telegram:1001")
    return Task(id=task_id, lines=[ChatLine("alice", words)], model="m", **fields)


def said(request: dict[str, Any]) -> list[str]:
    """The user's plain text turns in a request."""
    out = []
    for m in request["messages"]:
        content = m["content"]
        if m["role"] == "user" and isinstance(content, list) and content[0]["type"] == "text":
            out.append(content[0]["text"])
        elif m["role"] == "user" and isinstance(content, str):
            out.append(content)
    return out


def test_a_session_resumes_from_the_workspace_after_a_restart(tmp_path: Path) -> None:
    root = str(tmp_path)
    model = Fake()
    run_task(task("my name is Ada"), model, Sessions(root), root)
    run_task(task("what is my name?", 2), model, Sessions(root), root)  # a new container
    assert said(model.requests[-1]) == ["my name is Ada", "what is my name?"]


def test_another_session_number_starts_afresh_and_keeps_the_memory(tmp_path: Path) -> None:
    root = str(tmp_path)
    model = Fake()
    run_task(task("remember: colour = green"), model, Sessions(root), root)
    run_task(task("hello again", 2, session=1), model, Sessions(root), root)
    assert said(model.requests[-1]) == ["hello again"]
    system = model.requests[-1]["system"][0]["text"]
    assert "Your memory holds (read with memory_get): colour" in system
    run_task(task("still there?", 3, session=1), model, Sessions(root), root)
    assert said(model.requests[-1]) == ["hello again", "still there?"]


def test_near_the_context_limit_old_turns_are_summarised_and_the_chat_goes_on(
    tmp_path: Path,
) -> None:
    root = str(tmp_path)
    model = Fake()
    limit = 4000  # compaction above 2000 tokens of history, keeping about 1000 verbatim
    for n in range(12):
        words = f"turn {n}: " + "lorem ipsum " * 60
        result = run_task(task(words, n + 1, context_tokens=limit), model, Sessions(root), root)
        assert result.text.startswith(f"echo: turn {n}")
    summaries = [r for r in model.requests if SUMMARISE_MARKER in json.dumps(r["messages"])]
    assert summaries, "no compaction happened"
    first = summaries[0]["messages"][0]["content"]
    assert "user: turn 0: lorem" in first  # the oldest turns are what gets summarised
    last = model.requests[-1]
    assert said(last)[-1].startswith("turn 11:")
    assert "turn 0" not in json.dumps(last["messages"])  # no longer verbatim...
    system = last["system"][0]["text"]
    assert "Summary of this conversation before the messages below:" in system
    assert "turn 0: lorem" in system  # ...but in the summary, carried through compactions
    state = Sessions(root).load("telegram:1001")
    assert state.estimated_tokens() <= limit // 2 + 400


def test_a_failed_summary_drops_old_turns_with_a_note_and_the_chat_goes_on(
    tmp_path: Path,
) -> None:
    root = str(tmp_path)
    sessions = Sessions(root)
    state = sessions.load("telegram:1001")
    for n in range(10):
        state.messages += [
            {"role": "user", "content": f"q{n} " + "x" * 400},
            {"role": "assistant", "content": [{"type": "text", "text": f"a{n}"}]},
        ]
    sessions.save("telegram:1001", state)

    def failing_then_answering(request: dict[str, Any]) -> dict[str, Any]:
        if SUMMARISE_MARKER in json.dumps(request["messages"]):
            raise RuntimeError("model down")
        return text("fine")

    result = run_task(task("next", 2, context_tokens=2000), failing_then_answering, sessions, root)
    assert result.text == "fine"
    state = sessions.load("telegram:1001")
    assert "earlier messages were dropped" in state.summary
    assert state.messages[-2]["content"] == "next"
    assert state.messages[0]["role"] == "user" and isinstance(state.messages[0]["content"], str)


def test_every_call_marks_tools_system_and_the_conversation_for_caching(tmp_path: Path) -> None:
    model = ScriptedModel([tool_use("shell", {"command": "true"}), text("ok")])
    run_task(task("go", system_prompt="Be brief."), model, Sessions(str(tmp_path)), str(tmp_path))
    for request in model.raw:
        assert request["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert all("cache_control" not in t for t in request["tools"][:-1])
        assert request["system"] == [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
        ]
        assert request["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
        marks = json.dumps(request).count("cache_control")
        assert marks == 3  # the API allows four
    saved = json.loads(Sessions(str(tmp_path)).path("telegram:1001").read_text())
    assert "cache_control" not in json.dumps(saved)


def test_the_second_turn_reads_its_history_from_the_cache(tmp_path: Path) -> None:
    root = str(tmp_path)
    model = Fake()
    run_task(task("run: echo hi", system_prompt="S" * 6000), model, Sessions(root), root)
    run_task(task("and now?", 2, system_prompt="S" * 6000), model, Sessions(root), root)
    first, _, third = model.usage
    assert first["cache_read_input_tokens"] == 0 and first["cache_creation_input_tokens"] > 1024
    previous = third["cache_read_input_tokens"]
    assert previous > first["cache_creation_input_tokens"]  # tools, system and history
    assert third["input_tokens"] == 0  # all that is new sits before the last breakpoint


def test_with_cache_breakpoints_leaves_the_request_alone() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "t"}]}
    before = copy.deepcopy(request)
    marked = with_cache_breakpoints(request)
    assert request == before
    assert marked["messages"][0]["content"] == [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    ]


# -- limits --------------------------------------------------------------------------------------


def endless_tools() -> ScriptedModel:
    busy = tool_use("shell", {"command": "true"})
    busy["usage"] = {"input_tokens": 700, "cache_read_input_tokens": 300, "output_tokens": 50}
    return ScriptedModel([busy], repeat_last=True)


def test_max_steps_ends_the_task_with_a_message(tmp_path: Path) -> None:
    model = endless_tools()
    result = run_task(task("loop", max_steps=3), model, Sessions(str(tmp_path)), str(tmp_path))
    assert len(model.requests) == 3
    assert result.error is not None and "stopped after 3 steps" in result.error
    assert "max_steps" in result.error
    state = Sessions(str(tmp_path)).load("telegram:1001")
    assert state.messages[-1]["role"] == "assistant"  # the history stays well formed


def test_max_task_tokens_ends_the_task_with_a_message(tmp_path: Path) -> None:
    model = endless_tools()
    limit = task("loop", max_task_tokens=2500)
    result = run_task(limit, model, Sessions(str(tmp_path)), str(tmp_path))
    assert len(model.requests) == 3  # 1050 tokens a call: over 2500 after the third
    assert result.error is not None and "3150 tokens" in result.error
    assert "max_task_tokens" in result.error


def test_the_time_limit_ends_the_task_with_a_message(tmp_path: Path) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 10.0  # every look at the clock: ten seconds later
        return now[0]

    model = endless_tools()
    limited = task("loop", time_limit=25)
    result = run_task(limited, model, Sessions(str(tmp_path)), str(tmp_path), clock=clock)
    assert result.error is not None and "past the limit of 25s" in result.error
    assert "task_timeout" in result.error
    assert len(model.requests) == 3
