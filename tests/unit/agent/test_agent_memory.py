"""The agent's key-value memory: its tools, its limits, and writes a crash cannot tear."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clawpen_agent.memory import MAX_KEY_CHARS, MAX_KEYS, MAX_VALUE_CHARS, Memory
from clawpen_agent.tools import run_tool


def test_set_get_list_delete_through_the_tools(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert run_tool("memory_set", {"key": "user.name", "value": "Ada"}, root) == (
        "remembered 'user.name'",
        False,
    )
    run_tool("memory_set", {"key": "user.city", "value": "London"}, root)
    run_tool("memory_set", {"key": "project", "value": "clawpen"}, root)
    assert run_tool("memory_get", {"key": "user.name"}, root) == ("Ada", False)
    assert run_tool("memory_list", {}, root) == ("project\nuser.city\nuser.name", False)
    assert run_tool("memory_list", {"prefix": "user."}, root) == ("user.city\nuser.name", False)
    assert run_tool("memory_delete", {"key": "user.city"}, root) == ("forgot 'user.city'", False)
    assert run_tool("memory_get", {"key": "user.city"}, root) == (
        "(no memory under 'user.city')",
        False,
    )
    assert Memory(root).keys() == ["project", "user.name"]  # read back from the file


def test_setting_a_key_again_replaces_its_value(tmp_path: Path) -> None:
    run_tool("memory_set", {"key": "k", "value": "old"}, str(tmp_path))
    run_tool("memory_set", {"key": "k", "value": "new"}, str(tmp_path))
    assert run_tool("memory_get", {"key": "k"}, str(tmp_path)) == ("new", False)


def test_each_agent_has_its_own_memory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_tool("memory_set", {"key": "secret", "value": "a's"}, str(tmp_path / "a"))
    assert run_tool("memory_get", {"key": "secret"}, str(tmp_path / "b"))[0].startswith("(no")


@pytest.mark.parametrize(
    ("tool", "args", "error"),
    [
        pytest.param("memory_set", {"value": "v"}, "non-empty string", id="no_key"),
        pytest.param("memory_set", {"key": "", "value": "v"}, "non-empty string", id="empty_key"),
        pytest.param("memory_set", {"key": "k"}, "'value' must be a string", id="no_value"),
        pytest.param(
            "memory_set", {"key": "k" * (MAX_KEY_CHARS + 1), "value": "v"}, "at most", id="long_key"
        ),
        pytest.param(
            "memory_set", {"key": "a\nb", "value": "v"}, "control characters", id="newline_key"
        ),
        pytest.param(
            "memory_set",
            {"key": "k", "value": "v" * (MAX_VALUE_CHARS + 1)},
            f"at most {MAX_VALUE_CHARS}",
            id="long_value",
        ),
        pytest.param("memory_get", {"key": 3}, "non-empty string", id="number_key"),
    ],
)
def test_bad_calls_are_clear_tool_errors(
    tmp_path: Path, tool: str, args: dict[str, object], error: str
) -> None:
    text, is_error = run_tool(tool, args, str(tmp_path))
    assert is_error and error in text
    assert not (tmp_path / ".clawpen" / "memory.json").exists()


def test_a_full_memory_refuses_new_keys_but_updates_old_ones(tmp_path: Path) -> None:
    path = tmp_path / ".clawpen" / "memory.json"
    path.parent.mkdir()
    path.write_text(json.dumps({f"k{i}": "v" for i in range(MAX_KEYS)}))
    text, is_error = run_tool("memory_set", {"key": "one-more", "value": "v"}, str(tmp_path))
    assert is_error and "delete some first" in text
    assert run_tool("memory_set", {"key": "k1", "value": "changed"}, str(tmp_path))[1] is False


def test_a_corrupt_memory_file_reads_as_empty_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".clawpen" / "memory.json"
    path.parent.mkdir()
    path.write_text('{"half": "writ')
    assert run_tool("memory_list", {}, str(tmp_path)) == ("(no memories)", False)
    run_tool("memory_set", {"key": "k", "value": "v"}, str(tmp_path))
    assert json.loads(path.read_text()) == {"k": "v"}


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from clawpen_agent.memory import Memory
    real_replace = os.replace
    def stalled_replace(src, dst):
        # the new value is written and fsynced, the rename not yet done: die here
        print("written", flush=True)
        signal.pause()  # until the test kills it
        real_replace(src, dst)
    if sys.argv[2] == "stall":
        os.replace = stalled_replace
    Memory(sys.argv[1]).set("plan", sys.argv[3])
    print("done", flush=True)
    """
)


def _write_memory(root: Path, mode: str, value: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), mode, value],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_killed_mid_write_leaves_the_old_value_whole(tmp_path: Path) -> None:
    """kill -9 between writing the new value and the rename: the old value, never a mix."""
    first = _write_memory(tmp_path, "plain", "old " * 1000)
    assert first.wait(30) == 0
    writer = _write_memory(tmp_path, "stall", "new " * 3000)
    assert writer.stdout is not None
    assert writer.stdout.readline() == "written\n"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)
    assert Memory(str(tmp_path)).get("plan") == "old " * 1000
    # the next write succeeds and the leftover temporary file does not confuse anyone
    assert _write_memory(tmp_path, "plain", "newer").wait(30) == 0
    assert Memory(str(tmp_path)).get("plan") == "newer"


KILL_STEP = 0.01


def test_killed_at_random_moments_memory_is_always_old_or_new(tmp_path: Path) -> None:
    values = [f"v{i}-" + "x" * (i * 2500) for i in range(6)]
    assert _write_memory(tmp_path, "plain", values[0]).wait(30) == 0
    for i, value in enumerate(values[1:], 1):
        writer = _write_memory(tmp_path, "plain", value)
        # a kill at a different moment each time (not a timing assertion): the writer lives
        # at most KILL_STEP * i seconds, less if it finishes first
        with contextlib.suppress(subprocess.TimeoutExpired):
            writer.wait(KILL_STEP * i)
        writer.kill()
        writer.wait(10)
        assert Memory(str(tmp_path)).get("plan") in values[: i + 1]
