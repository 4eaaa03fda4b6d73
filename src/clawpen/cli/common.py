"""What every command shares: the ``--config`` option, one line and an exit code for a
``ClawpenError``, the vault, and the agent a command means when it names none."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TextIO, TypeVar, cast

import typer

from ..config import DEFAULT_PATH, data_dir_of, read_yaml, vault_of
from ..errors import ClawpenError
from ..obs import logging as clawpen_logging
from ..obs.logfile import RotatingFile, log_path

if TYPE_CHECKING:
    from ..security.vault import Vault

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", envvar="CLAWPEN_CONFIG", help="The config file.")
]
DEFAULT_CONFIG = Path(DEFAULT_PATH)
T = TypeVar("T")


def fail(error: ClawpenError) -> NoReturn:
    print(f"clawpen: {error}", file=sys.stderr)
    raise typer.Exit(error.exit_code)


def guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except ClawpenError as error:
        fail(error)


def first_agent(config: Path) -> str:
    agents = read_yaml(config).get("agents") or [{}]
    return str(agents[0].get("id", "assistant"))


def audit_to_stderr() -> None:
    """Vault reads are logged (``credential_accessed``) as JSON lines on stderr, leaving stdout
    to the command's own output."""
    clawpen_logging.configure("info", stream=sys.stderr)


def audit_to_log(config: Path) -> None:
    """For commands that read the vault on the way (``check``, ``doctor``): its reads are
    logged in the orchestrator's log file (``clawpen logs``), not on the terminal, where a raw
    JSON line is noise. Without a data_dir yet there is nothing to audit against: nowhere."""
    sink: RotatingFile | None = None
    try:
        data_dir = data_dir_of(config)
        if data_dir.is_dir():
            sink = RotatingFile(log_path(data_dir), max_bytes=2**62)  # the orchestrator rotates
    except (ClawpenError, OSError):
        sink = None
    stream = cast(TextIO, sink) if sink is not None else open(os.devnull, "w")  # noqa: SIM115
    clawpen_logging.configure("info", stream=stream)


def vault(config: Path) -> Vault:
    audit_to_stderr()
    return guard(lambda: vault_of(config))
