"""``clawpen logs``: the orchestrator's log file, read back (``logview.py`` does the reading)."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from ..config import data_dir_of
from ..errors import ClawpenError
from ..obs.logfile import log_path
from . import logview
from .common import DEFAULT_CONFIG, ConfigOption, fail, guard


def logs(
    agent: Annotated[str | None, typer.Argument(help="Only this agent's lines.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines back.", min=0)] = 50,
    as_json: Annotated[
        bool | None,
        typer.Option("--json/--human", help="JSON lines, or one readable line per event."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """The orchestrator's log (data_dir/logs/clawpen.log, rotated): readable on a terminal,
    JSON lines when piped; AGENT keeps that agent's lines, -f follows."""
    path = log_path(guard(lambda: data_dir_of(config)))
    if not logview.log_files(path) and not follow:
        fail(ClawpenError(f"no log yet ({path} does not exist)", "start: clawpen run"))
    raw = as_json if as_json is not None else not sys.stdout.isatty()
    show = (lambda line: line) if raw else logview.human
    until = logview.size(path)  # the tail ends here and following starts here: no line lost
    for line in logview.tail(path, lines, agent, until) if lines else []:
        print(show(line), flush=follow)
    if follow:
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            for line in logview.follow(path, agent, start=until):
                print(show(line), flush=True)
