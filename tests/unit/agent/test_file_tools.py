"""edit_file, glob and grep: exact edits, and nothing found or touched outside /workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawpen_agent.tools import run_tool


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("def main():\n    return 1\n# TODO: tests\n")
    (workspace / "notes.md").write_text("todo: buy milk\nDone: nothing\n")
    (workspace / "blob.bin").write_bytes(b"\x00TODO binary")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("TODO secret\n")
    (workspace / "escape").symlink_to(outside)
    (workspace / "escape.md").symlink_to(outside / "secret.md")
    return workspace


def test_edit_replaces_a_unique_string(root: Path) -> None:
    args = {"path": "src/app.py", "old_string": "return 1", "new_string": "return 2"}
    assert run_tool("edit_file", args, str(root)) == ("replaced 1 occurrence in src/app.py", False)
    assert (root / "src" / "app.py").read_text() == "def main():\n    return 2\n# TODO: tests\n"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param({"old_string": "nowhere", "new_string": "x"}, "does not occur", id="absent"),
        pytest.param({"old_string": "o", "new_string": "0"}, "occurs 4 times", id="ambiguous"),
        pytest.param({"old_string": "", "new_string": "x"}, "non-empty", id="empty_old"),
        pytest.param({"old_string": "o"}, "string 'new_string'", id="no_new"),
    ],
)
def test_refused_edits_change_nothing(root: Path, args: dict[str, str], error: str) -> None:
    before = (root / "notes.md").read_text()
    text, is_error = run_tool("edit_file", {"path": "notes.md", **args}, str(root))
    assert is_error and error in text
    assert (root / "notes.md").read_text() == before


def test_edit_replace_all(root: Path) -> None:
    args = {"path": "notes.md", "old_string": "o", "new_string": "0", "replace_all": True}
    assert run_tool("edit_file", args, str(root)) == ("replaced 4 occurrences in notes.md", False)
    assert (root / "notes.md").read_text() == "t0d0: buy milk\nD0ne: n0thing\n"


def test_edit_through_a_symlink_out_is_refused(root: Path, tmp_path: Path) -> None:
    args = {"path": "escape.md", "old_string": "TODO", "new_string": "gone"}
    text, is_error = run_tool("edit_file", args, str(root))
    assert is_error and "outside" in text
    assert (tmp_path / "outside" / "secret.md").read_text() == "TODO secret\n"


def test_glob_finds_files_inside_only(root: Path) -> None:
    assert run_tool("glob", {"pattern": "**/*.md"}, str(root)) == ("notes.md", False)
    assert run_tool("glob", {"pattern": "**/*.py"}, str(root)) == ("src/app.py", False)
    assert run_tool("glob", {"pattern": "*.txt"}, str(root)) == ("(no match)", False)


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "src/../../*"])
def test_glob_patterns_cannot_climb_out(root: Path, pattern: str) -> None:
    text, is_error = run_tool("glob", {"pattern": pattern}, str(root))
    assert is_error and "relative to /workspace" in text


def test_grep_finds_lines_and_skips_binaries_and_symlinks_out(root: Path) -> None:
    text, is_error = run_tool("grep", {"pattern": "todo", "ignore_case": True}, str(root))
    assert not is_error
    assert text.splitlines() == ["notes.md:1: todo: buy milk", "src/app.py:3: # TODO: tests"]
    assert run_tool("grep", {"pattern": "TODO", "include": "*.md"}, str(root)) == (
        "(no match)",
        False,
    )
    assert run_tool("grep", {"pattern": "def", "path": "src/app.py"}, str(root)) == (
        "src/app.py:1: def main():",
        False,
    )


def test_grep_in_a_directory_outside_is_refused(root: Path) -> None:
    text, is_error = run_tool("grep", {"pattern": "x", "path": "escape"}, str(root))
    assert is_error and "outside" in text


def test_grep_with_a_bad_regex_says_so(root: Path) -> None:
    text, is_error = run_tool("grep", {"pattern": "(unclosed"}, str(root))
    assert is_error and "not a valid regular expression" in text


def test_read_a_numbered_slice(root: Path) -> None:
    text, _ = run_tool("read_file", {"path": "src/app.py", "offset": 2, "limit": 1}, str(root))
    assert text == "     2\t    return 1"


def test_the_agents_bookkeeping_is_not_listed(root: Path) -> None:
    run_tool("memory_set", {"key": "k", "value": "TODO hidden"}, str(root))
    assert ".clawpen" not in run_tool("list_files", {}, str(root))[0]
    assert "hidden" not in run_tool("grep", {"pattern": "TODO"}, str(root))[0]
