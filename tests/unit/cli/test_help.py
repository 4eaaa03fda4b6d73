"""`clawpen --help` reads as prose: a docstring's wrapped lines flow into one paragraph,
``code`` shows without its backticks, and a flag is shown bare, never as `--version <bool>`."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys


def help_of(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "clawpen", *args, "--help"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    return done.stdout


def test_help_flows_wrapped_docstrings_and_shows_no_markup_or_flag_types() -> None:
    for args in ((), ("pair",), ("chat",), ("jobs", "add"), ("service", "install")):
        text = help_of(*args)
        assert "``" not in text, args
        assert "<bool>" not in text, args
        # a hard-wrapped docstring line ends a row of the table early: a row of one or two
        # words followed by a row that goes on is the sign
        rows = [re.sub(r"[│╭╰─╮╯]", "", line).strip() for line in text.splitlines()]
        for row, after in itertools.pairwise(rows):
            words = row.split()
            assert not (1 <= len(words) <= 2 and words[0] in ("whose", "its", "(who", "code,",
                        "channels)", "clawpen")), (args, row, after)  # fmt: skip
    top = help_of()
    assert "--version  " in top and "Print the version." in top
    flowing = " ".join(re.sub(r"[│╭╰─╮╯]", "", top).split())
    assert "channels whose tokens are set" in flowing


def test_version_prints_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clawpen", "--version"], capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert re.fullmatch(r"clawpen \d+\.\d+\.\d+\S*\n", done.stdout)
