"""What every command shares: the ``--config`` option, one line and an exit code for a
``ClawpenError``, the vault, and the agent a command means when it names none."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from ..config import DEFAULT_PATH, read_yaml, vault_of
from ..errors import ClawpenError
from ..obs import logging as clawpen_logging

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


def vault(config: Path) -> Vault:
    audit_to_stderr()
    return guard(lambda: vault_of(config))
