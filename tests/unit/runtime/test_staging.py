"""Staged writes to a mount: the changes the agent made in its copy are listed without
following a link it planted, applied to the host folder only as shown, and thrown away on a
deny."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawpen.runtime import staging


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    host = tmp_path / "notes"
    (host / "sub").mkdir(parents=True)
    (host / "keep.txt").write_text("same\n")
    (host / "edit.txt").write_text("one\ntwo\n")
    (host / "sub" / "gone.txt").write_text("bye\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's own file\n")
    staged = staging.prepare(host, tmp_path / "data" / "staging" / "a" / "notes", uid=None)
    return host, staged, secret


def test_the_copy_starts_as_the_folder_and_changes_are_listed(
    folders: tuple[Path, Path, Path],
) -> None:
    host, staged, _ = folders
    assert staging.changes(host, staged) == []
    (staged / "edit.txt").write_text("one\nTWO\nthree\n")
    (staged / "sub" / "new.txt").write_text("hello\n")
    (staged / "sub" / "gone.txt").unlink()
    found = {c.path: (c.kind, c.summary) for c in staging.changes(host, staged)}
    assert found == {
        "edit.txt": ("changed", "+2 -1 lines"),
        "sub/new.txt": ("added", "+1 -0 lines"),
        "sub/gone.txt": ("removed", "+0 -1 lines"),
    }


def test_allow_applies_what_was_shown_and_nothing_changed_after(
    folders: tuple[Path, Path, Path],
) -> None:
    host, staged, _ = folders
    (staged / "edit.txt").write_text("edited\n")
    (staged / "deep" / "er").mkdir(parents=True)
    (staged / "deep" / "er" / "new.txt").write_text("new\n")
    (staged / "late.txt").write_text("as shown\n")
    (staged / "sub" / "gone.txt").unlink()
    shown = staging.changes(host, staged)
    (staged / "late.txt").write_text("changed after the card\n")
    stale = staging.apply(host, staged, shown)
    assert stale == ["late.txt"]
    assert (host / "edit.txt").read_text() == "edited\n"
    assert (host / "deep" / "er" / "new.txt").read_text() == "new\n"
    assert not (host / "sub" / "gone.txt").exists()
    assert not (host / "late.txt").exists()
    assert (host / "keep.txt").read_text() == "same\n"


def test_a_planted_symlink_is_never_followed_nor_applied(
    folders: tuple[Path, Path, Path],
) -> None:
    host, staged, secret = folders
    (staged / "link.txt").symlink_to(secret)  # read the host's file through the review
    (staged / "edit.txt").unlink()
    (staged / "edit.txt").symlink_to(secret)  # or overwrite it with a link
    os.mkfifo(staged / "pipe")  # or hang the review on a FIFO
    found = {c.path: (c.kind, c.summary) for c in staging.changes(host, staged)}
    assert found["link.txt"] == ("skipped", "a symlink: not applied")
    assert found["edit.txt"] == ("skipped", "a symlink: not applied")
    assert found["pipe"] == ("skipped", "a special: not applied")
    assert staging.apply(host, staged, staging.changes(host, staged)) == []
    assert not (host / "link.txt").exists()
    assert (host / "edit.txt").read_text() == "one\ntwo\n" and not (host / "edit.txt").is_symlink()
    assert secret.read_text() == "the host's own file\n"


def test_a_folder_swapped_for_a_link_after_the_card_leads_no_write_outside(
    folders: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    host, staged, _ = folders
    outside = tmp_path / "outside"
    outside.mkdir()
    (staged / "sub" / "x.txt").write_text("x\n")
    shown = staging.changes(host, staged)
    (host / "sub" / "gone.txt").unlink()
    (host / "sub").rmdir()
    (host / "sub").symlink_to(outside)  # the host path now leads out of the folder
    assert staging.apply(host, staged, shown) == ["sub/x.txt"]
    assert list(outside.iterdir()) == []


def test_deny_throws_the_changes_away(folders: tuple[Path, Path, Path]) -> None:
    host, staged, secret = folders
    (staged / "edit.txt").write_text("unwanted\n")
    (staged / "link").symlink_to(secret.parent)
    staging.discard(host, staged, uid=None)
    assert staging.changes(host, staged) == []
    assert (host / "edit.txt").read_text() == "one\ntwo\n"
    assert secret.exists()
