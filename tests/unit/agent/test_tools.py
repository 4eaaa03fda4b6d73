"""The agent's tools: a shell and files, confined to the workspace root."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from clawpen_agent.tools import API_TOOLS, FILE_TOOLS, MAX_OUTPUT, TOOL_SCHEMAS, TOOLS, run_tool


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("top secret")
    return secret


def test_every_tool_has_a_schema() -> None:
    assert sorted(s["name"] for s in TOOL_SCHEMAS) == sorted([*TOOLS, *API_TOOLS, *FILE_TOOLS])


def test_job_tools_speak_to_the_socket_and_show_refusals_to_the_model() -> None:
    asked: list[tuple[str, str, bytes | None]] = []

    def api(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        asked.append((method, path, body))
        if method == "POST":
            return 400, b'{"error": "a job may run at most every 5 minutes"}'
        return 200, b'{"cancelled": "a b"}'

    text, is_error = run_tool("schedule_job", {"name": "x", "task": "t", "every": "1m"}, api=api)
    assert is_error and "at most every 5 minutes" in text
    assert asked[0] == ("POST", "/v1/jobs", b'{"name": "x", "task": "t", "every": "1m"}')
    assert run_tool("cancel_job", {"name": "a b"}, api=api) == ("cancelled a b", False)
    assert asked[1][:2] == ("DELETE", "/v1/jobs/a%20b")
    assert run_tool("list_jobs", {}) == ("the orchestrator cannot be reached from here", True)


# -- shell -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected_start", "expected_in"),
    [
        pytest.param("echo hello", "exit_code: 0\n", "hello", id="stdout"),
        pytest.param("echo oops >&2; exit 3", "exit_code: 3\n", "oops", id="stderr_and_exit_code"),
        pytest.param("pwd", "exit_code: 0\n", "/ws", id="runs_in_the_root"),
        pytest.param("cat nonexistent", "exit_code: 1\n", "nonexistent", id="failing_command"),
    ],
)
def test_shell_returns_exit_code_and_output(
    root: Path, command: str, expected_start: str, expected_in: str
) -> None:
    output, is_error = run_tool("shell", {"command": command}, str(root))
    assert is_error is False  # a non-zero exit is information for the model, not a tool error
    assert output.startswith(expected_start)
    assert expected_in in output


def test_shell_cwd_is_the_root(root: Path) -> None:
    output, _ = run_tool("shell", {"command": "pwd -P"}, str(root))
    assert output == f"exit_code: 0\n{root.resolve()}\n"


def test_shell_writes_land_in_the_root(root: Path) -> None:
    run_tool("shell", {"command": "echo made-by-shell > note.txt"}, str(root))
    assert (root / "note.txt").read_text() == "made-by-shell\n"


def test_shell_timeout_is_an_error_not_a_hang(root: Path) -> None:
    started = time.monotonic()
    output, is_error = run_tool(
        "shell", {"command": "echo before; exec sleep 5", "timeout": 1}, str(root)
    )
    assert time.monotonic() - started < 3
    assert is_error is True
    assert output.startswith("timed out after 1s")
    assert "before" in output  # what it printed so far still helps the model


def test_shell_background_job_does_not_block_the_tool(root: Path) -> None:
    output, is_error = run_tool(
        "shell", {"command": "sleep 2 & echo started", "timeout": 1}, str(root)
    )
    assert (output, is_error) == ("exit_code: 0\nstarted\n", False)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param({}, id="missing_command"),
        pytest.param({"command": ""}, id="empty_command"),
        pytest.param({"command": "   "}, id="blank_command"),
        pytest.param({"command": ["ls"]}, id="non_string_command"),
    ],
)
def test_shell_without_a_command_is_an_error(root: Path, args: dict[str, Any]) -> None:
    output, is_error = run_tool("shell", args, str(root))
    assert is_error is True
    assert "command" in output


@pytest.mark.parametrize("timeout", ["soon", None])
def test_shell_bad_timeout_is_a_tool_error(root: Path, timeout: object) -> None:
    _, is_error = run_tool("shell", {"command": "echo hi", "timeout": timeout}, str(root))
    assert is_error is True


def test_shell_output_over_max_is_clipped(root: Path) -> None:
    size = MAX_OUTPUT * 3
    output, is_error = run_tool(
        "shell", {"command": f"head -c {size} /dev/zero | tr '\\0' a; echo; echo END"}, str(root)
    )
    assert is_error is False
    assert len(output) < MAX_OUTPUT + 100
    assert "[output truncated]" in output
    assert output.startswith("exit_code: 0\naaa")
    assert output.rstrip().endswith("END")  # the tail (usually the error) is kept


# -- files -------------------------------------------------------------------------------------


def test_write_then_read_a_file(root: Path) -> None:
    output, is_error = run_tool(
        "write_file", {"path": "notes/today.md", "content": "héllo\n"}, str(root)
    )
    assert is_error is False
    assert "wrote 7 bytes" in output
    assert (root / "notes" / "today.md").read_text() == "héllo\n"
    assert run_tool("read_file", {"path": "notes/today.md"}, str(root)) == ("héllo\n", False)


def test_write_replaces_existing_file(root: Path) -> None:
    run_tool("write_file", {"path": "a.txt", "content": "one"}, str(root))
    run_tool("write_file", {"path": "a.txt", "content": "two"}, str(root))
    assert (root / "a.txt").read_text() == "two"


def test_list_files_marks_directories_and_sorts(root: Path) -> None:
    (root / "b.txt").write_text("")
    (root / "a_dir").mkdir()
    (root / "c.txt").write_text("")
    assert run_tool("list_files", {}, str(root)) == ("a_dir/\nb.txt\nc.txt", False)
    assert run_tool("list_files", {"path": "a_dir"}, str(root)) == ("(empty)", False)


def test_read_large_file_is_clipped(root: Path) -> None:
    (root / "big.txt").write_text("x" * (MAX_OUTPUT * 2))
    output, is_error = run_tool("read_file", {"path": "big.txt"}, str(root))
    assert is_error is False
    assert len(output) < MAX_OUTPUT + 100
    assert "[output truncated]" in output


@pytest.mark.parametrize(
    ("name", "args", "expected_in"),
    [
        pytest.param("read_file", {"path": "missing.txt"}, "cannot read", id="read_missing"),
        pytest.param("read_file", {"path": "."}, "cannot read", id="read_a_directory"),
        pytest.param("list_files", {"path": "nope"}, "cannot list", id="list_missing"),
        pytest.param("write_file", {"path": "x.txt"}, "content", id="write_without_content"),
        pytest.param("write_file", {"path": "x", "content": 5}, "content", id="write_non_string"),
        pytest.param("no_such_tool", {}, "unknown tool 'no_such_tool'", id="unknown_tool"),
    ],
)
def test_tool_failure_is_reported_to_the_model(
    root: Path, name: str, args: dict[str, Any], expected_in: str
) -> None:
    output, is_error = run_tool(name, args, str(root))
    assert is_error is True
    assert expected_in in output


# -- confinement -------------------------------------------------------------------------------


ESCAPES = [
    pytest.param("read_file", {"path": "../outside/secret.txt"}, id="read_dotdot"),
    pytest.param("read_file", {"path": "sub/../../outside/secret.txt"}, id="read_nested_dotdot"),
    pytest.param("read_file", {"path": "{outside}/secret.txt"}, id="read_absolute"),
    pytest.param("read_file", {"path": "/etc/passwd"}, id="read_etc_passwd"),
    pytest.param("read_file", {"path": "../ws-evil/x"}, id="read_sibling_with_root_prefix"),
    pytest.param("list_files", {"path": ".."}, id="list_parent"),
    pytest.param("list_files", {"path": "{outside}"}, id="list_absolute"),
    pytest.param("write_file", {"path": "../outside/new.txt", "content": "x"}, id="write_dotdot"),
    pytest.param("write_file", {"path": "{outside}/new.txt", "content": "x"}, id="write_absolute"),
]


@pytest.mark.parametrize(("name", "args"), ESCAPES)
def test_paths_outside_the_root_are_refused(
    root: Path, outside: Path, name: str, args: dict[str, str]
) -> None:
    args = {k: v.replace("{outside}", str(outside)) for k, v in args.items()}
    output, is_error = run_tool(name, args, str(root))
    assert is_error is True
    assert "is outside" in output
    assert "top secret" not in output
    assert not (outside / "new.txt").exists()


def test_absolute_path_inside_the_root_is_allowed(root: Path) -> None:
    (root / "in.txt").write_text("fine")
    assert run_tool("read_file", {"path": str(root / "in.txt")}, str(root)) == ("fine", False)


SYMLINK_ESCAPES = [
    pytest.param("read_file", {"path": "link_file"}, id="read_through_file_link"),
    pytest.param("read_file", {"path": "link_dir/secret.txt"}, id="read_through_dir_link"),
    pytest.param("list_files", {"path": "link_dir"}, id="list_through_dir_link"),
    pytest.param("write_file", {"path": "link_file", "content": "x"}, id="write_through_link"),
    pytest.param(
        "write_file", {"path": "link_dir/new.txt", "content": "x"}, id="write_into_dir_link"
    ),
    pytest.param("write_file", {"path": "dangling", "content": "x"}, id="write_dangling_link"),
]


@pytest.mark.parametrize(("name", "args"), SYMLINK_ESCAPES)
def test_symlinks_pointing_outside_are_refused(
    root: Path, outside: Path, name: str, args: dict[str, str]
) -> None:
    (root / "link_file").symlink_to(outside / "secret.txt")
    (root / "link_dir").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "new.txt")
    output, is_error = run_tool(name, args, str(root))
    assert is_error is True
    assert "is outside" in output
    assert (outside / "secret.txt").read_text() == "top secret"
    assert not (outside / "new.txt").exists()


def test_symlink_inside_the_root_is_followed(root: Path) -> None:
    (root / "real.txt").write_text("real")
    (root / "alias.txt").symlink_to(root / "real.txt")
    assert run_tool("read_file", {"path": "alias.txt"}, str(root)) == ("real", False)
