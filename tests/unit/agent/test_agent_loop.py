"""The agent's tool-use loop, driven by a scripted model."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from clawpen_agent.loop import MAX_STEPS, run_task
from clawpen_agent.protocol import ChatLine, Task
from clawpen_agent.session import Sessions as History


def unmark(request: dict[str, Any]) -> dict[str, Any]:
    """The request without its cache breakpoints (``with_cache_breakpoints`` undone), so that
    tests of the conversation read as the conversation."""
    request = copy.deepcopy(request)
    for tool in request.get("tools", []):
        tool.pop("cache_control", None)
    if isinstance(request.get("system"), list):
        request["system"] = "".join(b["text"] for b in request["system"])
    for message in request["messages"]:
        content = message["content"]
        if isinstance(content, list) and content and "cache_control" in content[-1]:
            content[-1].pop("cache_control")
            if len(content) == 1 and content[0]["type"] == "text" and message["role"] == "user":
                message["content"] = content[0]["text"]
    return request


class ScriptedModel:
    """A ``call_model`` that answers with canned responses and records every request (without
    its cache breakpoints; ``raw`` keeps them)."""

    def __init__(self, responses: list[dict[str, Any]], repeat_last: bool = False) -> None:
        self.responses = list(responses)
        self.repeat_last = repeat_last
        self.requests: list[dict[str, Any]] = []
        self.raw: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.raw.append(copy.deepcopy(request))
        self.requests.append(unmark(request))  # the loop keeps appending to its list
        if self.repeat_last and len(self.responses) == 1:
            return copy.deepcopy(self.responses[0])
        return self.responses.pop(0)


def text(answer: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": answer}], "stop_reason": "end_turn"}


def tool_use(name: str, args: dict[str, Any], use_id: str = "toolu_1") -> dict[str, Any]:
    return {
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": use_id, "name": name, "input": args},
        ],
        "stop_reason": "tool_use",
    }


def task(
    words: str, conversation: str = "telegram:1001", task_id: int = 1, system: str = ""
) -> Task:
    return Task(
        id=task_id,
        conversation=conversation,
        lines=[ChatLine("alice", words)],
        model="claude-test",
        system_prompt=system,
        max_tokens=256,
    )


def test_plain_answer_is_returned(tmp_path: Path) -> None:
    model = ScriptedModel([text("  hello back  ")])
    result = run_task(task("hi", system="Be brief."), model, History(str(tmp_path)), str(tmp_path))
    assert (result.text, result.error, result.tool_calls) == ("hello back", None, 0)
    [request] = model.requests
    assert request["model"] == "claude-test"
    assert request["max_tokens"] == 256
    assert request["system"] == "Be brief."
    assert request["messages"] == [{"role": "user", "content": "hi"}]
    assert {t["name"] for t in request["tools"]} == {
        "shell",
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "glob",
        "grep",
        "memory_get",
        "memory_set",
        "memory_delete",
        "memory_list",
        "schedule_job",
        "list_jobs",
        "cancel_job",
        "send_message",
        "web_fetch",
        "send_file",
    }


def test_no_system_prompt_sends_no_system_key(tmp_path: Path) -> None:
    model = ScriptedModel([text("ok")])
    run_task(task("hi"), model, History(str(tmp_path)), str(tmp_path))
    assert "system" not in model.requests[0]


def test_empty_answer_is_replaced(tmp_path: Path) -> None:
    model = ScriptedModel([{"content": [], "stop_reason": "end_turn"}])
    result = run_task(task("hi"), model, History(str(tmp_path)), str(tmp_path))
    assert result.text == "(no answer)"


def test_tool_use_runs_the_tool_and_sends_its_result_back(tmp_path: Path) -> None:
    model = ScriptedModel(
        [tool_use("shell", {"command": "echo from-tool > made.txt; cat made.txt"}), text("done")]
    )
    result = run_task(task("make a file"), model, History(str(tmp_path)), str(tmp_path))
    assert (result.text, result.error, result.tool_calls) == ("done", None, 1)
    assert (tmp_path / "made.txt").read_text() == "from-tool\n"
    second = model.requests[1]["messages"]
    assert second[-2]["role"] == "assistant"
    assert second[-2]["content"][1]["type"] == "tool_use"
    assert second[-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": "exit_code: 0\nfrom-tool\n",
                "is_error": False,
            }
        ],
    }


def test_tool_failure_goes_back_to_the_model_not_the_user(tmp_path: Path) -> None:
    model = ScriptedModel([tool_use("read_file", {"path": "../../etc/passwd"}), text("sorry")])
    result = run_task(task("read it"), model, History(str(tmp_path)), str(tmp_path))
    assert (result.text, result.error) == ("sorry", None)
    [tool_result] = model.requests[1]["messages"][-1]["content"]
    assert tool_result["is_error"] is True
    assert "outside" in tool_result["content"]


def test_several_tool_uses_in_one_turn_are_answered_together_in_order(tmp_path: Path) -> None:
    both = {
        "content": [
            {
                "type": "tool_use",
                "id": "a",
                "name": "write_file",
                "input": {"path": "x", "content": "1"},
            },
            {"type": "tool_use", "id": "b", "name": "read_file", "input": {"path": "x"}},
        ],
        "stop_reason": "tool_use",
    }
    model = ScriptedModel([both, text("ok")])
    result = run_task(task("go"), model, History(str(tmp_path)), str(tmp_path))
    assert result.tool_calls == 2
    results = model.requests[1]["messages"][-1]["content"]
    assert [(r["tool_use_id"], r["content"]) for r in results][1] == ("b", "1")
    assert [r["tool_use_id"] for r in results] == ["a", "b"]


def test_batched_lines_name_their_senders(tmp_path: Path) -> None:
    batch = Task(
        id=1,
        conversation="telegram:-42",
        lines=[ChatLine("alice", "hi"), ChatLine("bob", "hello")],
        model="m",
    )
    model = ScriptedModel([text("hi both")])
    run_task(batch, model, History(str(tmp_path)), str(tmp_path))
    assert model.requests[0]["messages"][-1]["content"] == "[alice] hi\n[bob] hello"


def test_history_is_kept_per_conversation_under_the_workspace(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    model = ScriptedModel(
        [
            tool_use("shell", {"command": "echo 1"}),
            text("first answer"),
            text("other chat answer"),
            text("second answer"),
        ]
    )
    run_task(task("first", task_id=1), model, history, str(tmp_path))
    run_task(
        task("elsewhere", conversation="telegram:2002", task_id=2), model, history, str(tmp_path)
    )
    run_task(task("second", task_id=3), model, history, str(tmp_path))

    files = sorted(p.name for p in (tmp_path / ".clawpen" / "conversations").iterdir())
    assert files == ["telegram_1001.json", "telegram_2002.json"]

    other_chat = model.requests[2]["messages"]
    assert other_chat == [{"role": "user", "content": "elsewhere"}]

    follow_up = model.requests[3]["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user", "assistant", "user"]
    assert follow_up[0] == {"role": "user", "content": "first"}
    assert follow_up[3]["content"] == [{"type": "text", "text": "first answer"}]
    assert follow_up[-1] == {"role": "user", "content": "second"}


def test_history_survives_a_new_history_object(tmp_path: Path) -> None:
    """A restarted container reads the same files back."""
    run_task(
        task("remember me"), ScriptedModel([text("ok")]), History(str(tmp_path)), str(tmp_path)
    )
    model = ScriptedModel([text("I remember")])
    run_task(task("again", task_id=2), model, History(str(tmp_path)), str(tmp_path))
    assert model.requests[0]["messages"][0] == {"role": "user", "content": "remember me"}


def test_corrupt_history_starts_afresh(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    history.dir.mkdir(parents=True)
    (history.dir / "telegram_1001.json").write_text("{not json")
    model = ScriptedModel([text("fresh")])
    result = run_task(task("hi"), model, history, str(tmp_path))
    assert result.text == "fresh"
    assert model.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
    saved = json.loads((history.dir / "telegram_1001.json").read_text())
    assert saved["messages"][0]["content"] == "hi"


def test_model_that_never_stops_using_tools_gives_up_with_an_error(tmp_path: Path) -> None:
    model = ScriptedModel([tool_use("shell", {"command": "true"})], repeat_last=True)
    result = run_task(task("loop forever"), model, History(str(tmp_path)), str(tmp_path))
    assert result.error is not None
    assert f"I stopped after {MAX_STEPS} steps" in result.error
    assert result.text == ""
    assert len(model.requests) == MAX_STEPS


def test_giving_up_still_records_the_turn(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    model = ScriptedModel([tool_use("shell", {"command": "true"})], repeat_last=True)
    run_task(task("loop forever"), model, history, str(tmp_path))
    assert (history.dir / "telegram_1001.json").exists()


def test_long_tool_chain_does_not_erase_the_conversation(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    run_task(task("my name is Ada"), ScriptedModel([text("hi Ada")]), history, str(tmp_path))
    steps = 21
    busy = ScriptedModel([tool_use("shell", {"command": "true"})] * steps + [text("done")])
    assert run_task(task("busy work", task_id=2), busy, history, str(tmp_path)).error is None
    model = ScriptedModel([text("ok")])
    run_task(task("what did I just ask?", task_id=3), model, history, str(tmp_path))
    sent = model.requests[0]["messages"]
    assert {"role": "user", "content": "busy work"} in sent


def test_the_agents_notes_file_joins_its_system_prompt(tmp_path: Path) -> None:
    from clawpen_agent.loop import system_prompt

    assert system_prompt("Be brief.", str(tmp_path)) == "Be brief."
    (tmp_path / "CLAUDE.md").write_text("The user's name is Ada.\n")
    prompt = system_prompt("Be brief.", str(tmp_path))
    assert prompt.startswith("Be brief.\n\nYour notes, kept in /workspace/CLAUDE.md")
    assert prompt.endswith("The user's name is Ada.\n")


def test_model_overload_is_retried_like_the_sdk_would_and_then_given_up() -> None:
    from clawpen_agent.loop import model_caller
    from clawpen_agent.transport import HTTPError

    answers: list[object] = [HTTPError(529, b"overloaded"), HTTPError(500, b"oops"), {"ok": 1}]
    waits: list[float] = []

    def post_json(path: str, payload: dict[str, Any]) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert model_caller(post_json, sleep=waits.append)({}) == {"ok": 1}
    assert waits == [0.5, 1.0]

    answers[:] = [HTTPError(400, b"bad request")]
    with pytest.raises(HTTPError):
        model_caller(post_json, sleep=waits.append)({})  # a client error is not retried
    answers[:] = [HTTPError(429, b"slow down")] * 4
    with pytest.raises(HTTPError):
        model_caller(post_json, sleep=waits.append)({})
    assert waits == [0.5, 1.0, 0.5, 1.0, 2.0]
