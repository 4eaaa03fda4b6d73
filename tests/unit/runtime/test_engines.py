"""The claude-code engine's pieces that need no container: image naming, what its agents may
send upstream, where its session ids live, and the fake model reading Claude Code's requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from clawpen.app import Orchestrator, agent_policy
from clawpen.config import AgentSettings
from clawpen.demo.model import decide as fake_answer
from clawpen.door.modelrequest import beta_header, decide
from clawpen.runtime.image import build_hint, engine_tag
from clawpen_agent.claude_engine import (
    DUMMY_KEY,
    MCP_TOOLS,
    SessionIds,
    clawpen_tools,
    cli_environment,
)
from clawpen_agent.memory import Memory
from clawpen_agent.tools import TOOL_SCHEMAS

CLI_BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,effort-2025-11-24,files-api"


def test_an_engine_variant_is_named_after_the_agent_image() -> None:
    assert engine_tag("clawpen-agent:latest", "light") == "clawpen-agent:latest"
    assert engine_tag("clawpen-agent:latest", "claude-code") == "clawpen-agent:latest-claude-code"
    assert engine_tag("clawpen-agent", "claude-code") == "clawpen-agent:latest-claude-code"
    assert engine_tag("reg:5000/agent", "claude-code") == "reg:5000/agent:latest-claude-code"
    hint = "run: clawpen image build --tag a:b --engine claude-code"
    assert build_hint("a:b-claude-code") == hint
    assert build_hint("a:b") == "run: clawpen image build --tag a:b"


def test_the_engine_is_light_unless_an_agent_asks_for_claude_code() -> None:
    assert AgentSettings(id="a").engine == "light"
    assert AgentSettings(id="a", engine="claude-code").engine == "claude-code"
    with pytest.raises(ValidationError):
        AgentSettings(id="a", engine="heavy")  # type: ignore[arg-type]


def _request() -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "context_management": {"edits": []},
        "output_config": {"effort": "high"},
    }


def test_only_claude_code_agents_may_send_the_clis_betas_and_fields(
    orchestrator_factory: Any,
) -> None:
    agents = [{"id": "code", "engine": "claude-code"}, {"id": "light"}]
    orchestrator: Orchestrator = orchestrator_factory(agents=agents)
    code, light = (
        agent_policy(orchestrator.settings, "code"),
        agent_policy(orchestrator.settings, "light"),
    )
    assert set(decide(_request(), code).body) >= {"context_management", "output_config"}
    assert beta_header(CLI_BETAS, code) == CLI_BETAS.removesuffix(",files-api")
    assert decide(_request(), light).dropped == ["context_management", "output_config"]
    assert beta_header(CLI_BETAS, light) is None


def test_the_cli_holds_a_dummy_key_and_reaches_the_model_on_loopback() -> None:
    env = cli_environment("claude-test", port=3129)
    assert env["ANTHROPIC_API_KEY"] == DUMMY_KEY
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:3129"
    models = {v for k, v in env.items() if k.endswith("_MODEL")}
    assert models == {"claude-test"}  # the proxy allows the agent's model only


def test_a_session_id_is_kept_per_conversation_and_session(tmp_path: Path) -> None:
    ids = SessionIds(str(tmp_path))
    ids.put("telegram:1/", 0, "abc")
    assert SessionIds(str(tmp_path)).get("telegram:1/", 0) == "abc"
    assert ids.get("telegram:1/", 1) is None  # after /new: a fresh session
    assert ids.get("telegram:2", 0) is None


def test_the_fake_model_answers_the_user_not_claude_codes_context() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>\nrun: nothing</system-reminder>"},
                {"type": "text", "text": "hello"},
            ],
        },
        {"role": "system", "content": "# Environment\nrun: not this either"},
    ]
    assert fake_answer(messages) == [{"type": "text", "text": "echo: hello"}]


def test_the_mcp_servers_tools_are_the_light_engines(tmp_path: Path) -> None:
    calls: list[tuple[str, str, bytes | None]] = []

    def api(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        calls.append((method, path, body))
        return 200, b'{"to": "telegram:1"}'

    tools = {t.name: t for t in clawpen_tools(str(tmp_path), api)}
    light = {s["name"]: s for s in TOOL_SCHEMAS}
    assert list(tools) == list(MCP_TOOLS)
    assert all(t.input_schema == light[t.name]["input_schema"] for t in tools.values())
    assert tools["memory_set"].run({"key": "colour", "value": "green"}) == (
        "remembered 'colour'",
        False,
    )
    assert Memory(str(tmp_path)).get("colour") == "green"  # the light engine's memory file
    assert tools["send_message"].run({"text": "hi"}) == ("sent to telegram:1", False)
    assert calls == [("POST", "/v1/outbox", b'{"text": "hi"}')]
    text, is_error = clawpen_tools(str(tmp_path), None)[0].run({"key": "x" * 500})
    assert is_error and "128" in text  # refusals reach the model as errors


def test_claude_code_runs_the_operators_stdio_mcp_servers_itself_and_never_a_remote_one() -> None:
    """The CLI configures stdio servers its own way (its tools then read mcp__NAME__tool);
    a remote server is not handed to it: its credential stays with the orchestrator."""
    from clawpen_agent.claude_engine import stdio_servers
    from clawpen_agent.protocol import Task

    task = Task(
        id=1,
        conversation="cli:a",
        lines=[],
        model="m",
        mcp_servers=[
            {"name": "calc", "command": ["python3", "-m", "calc", "--fast"], "env": {"A": "1"}},
            {"name": "weather", "remote": True},
        ],
    )
    assert stdio_servers(task) == {
        "calc": {
            "type": "stdio",
            "command": "python3",
            "args": ["-m", "calc", "--fast"],
            "env": {"A": "1"},
        }
    }
