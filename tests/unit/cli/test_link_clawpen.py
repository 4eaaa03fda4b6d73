"""The quick start puts `clawpen` on PATH: a link in /usr/local/bin to the venv's, made once,
never over a clawpen installed otherwise, and a hint where it cannot write."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "link-clawpen.sh"


def link(directory: Path, venv: Path) -> str:
    env = {**os.environ, "CLAWPEN_LINK_DIR": str(directory), "CLAWPEN_VENV": str(venv)}
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_the_link_is_made_once_and_points_at_the_venvs_clawpen(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    venv = tmp_path / "venv"
    said = link(bin_dir, venv)
    assert os.readlink(bin_dir / "clawpen") == str(venv / "bin" / "clawpen")
    assert "clawpen is on PATH" in said
    assert link(bin_dir, venv) == ""  # the second start says nothing


def test_another_clawpen_is_left_alone_and_an_unwritable_dir_gets_the_command(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "clawpen").write_text("#!/bin/sh\n")
    assert "is another clawpen" in link(bin_dir, tmp_path / "venv")
    assert (bin_dir / "clawpen").read_text() == "#!/bin/sh\n"
    missing = tmp_path / "no-such-dir"
    assert f"sudo ln -s {tmp_path / 'venv' / 'bin' / 'clawpen'} {missing / 'clawpen'}" in link(
        missing, tmp_path / "venv"
    )
