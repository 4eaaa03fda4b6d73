"""The agent's own MCP client (standard library only) against a stdio server written with the
official ``mcp`` SDK: the server's tools are listed as SERVER__tool and called."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawpen_agent.mcp import McpTools, stop_all
from tests.fakes.mcp_servers import STDIO_SERVER


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    stop_all()


def test_a_stdio_servers_tools_are_listed_and_called(tmp_path: Path) -> None:
    servers = [{"name": "calc", "command": [sys.executable, "-c", STDIO_SERVER], "env": {}}]
    tools = McpTools(servers, None, str(tmp_path))
    assert tools.problems == []
    names = {schema["name"] for schema in tools.schemas}
    assert names == {"calc__add", "calc__where"}
    add = next(s for s in tools.schemas if s["name"] == "calc__add")
    assert add["description"] == "Add two whole numbers."
    assert set(add["input_schema"]["properties"]) == {"a", "b"}
    assert tools.run("calc__add", {"a": 2, "b": 40}) == ("42", False)
    text, is_error = tools.run("calc__add", {"a": "two"})
    assert is_error and "a" in text
    again = McpTools(servers, None, str(tmp_path))  # the next task: the same process
    assert again.run("calc__add", {"a": 1, "b": 1}) == ("2", False)


def test_a_server_that_cannot_start_costs_only_its_tools(tmp_path: Path) -> None:
    servers = [{"name": "gone", "command": ["/nonexistent/server"], "env": {}}]
    tools = McpTools(servers, None, str(tmp_path))
    assert tools.schemas == []
    assert tools.problems == ["gone could not be started: No such file or directory"]
