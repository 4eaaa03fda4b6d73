"""``clawpen secrets ...``: credentials in the vault (no orchestrator needed)."""

from __future__ import annotations

import getpass
import re
import sys
from typing import Annotated

import typer

from ..config import SECRET_NAME
from ..errors import ClawpenError
from .common import DEFAULT_CONFIG, ConfigOption, fail, guard, vault

app = typer.Typer(no_args_is_help=True, help="Credentials in the vault.")

SecretName = Annotated[str, typer.Argument(help="The secret's name, as in secret:NAME.")]


def _check_name(name: str) -> None:
    if not re.fullmatch(SECRET_NAME, name):
        fail(ClawpenError(f"{name!r} is not a secret name", "use letters, digits, _ . -"))


@app.command("set")
def secrets_set(name: SecretName, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Store a secret: typed at a hidden prompt, or read from standard input when that is not
    a terminal (never from the command line, where other users' `ps` would see it)."""
    _check_name(name)
    store = vault(config)
    tty = sys.stdin.isatty()
    value = getpass.getpass(f"{name}: ") if tty else sys.stdin.read().rstrip("\r\n")
    guard(lambda: store.set(name, value))
    print(f"stored {name} ({store.backend.name} vault)", file=sys.stderr)


@app.command("list")
def secrets_list(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """The names of the stored secrets (never their values)."""
    for name in guard(lambda: vault(config).list()):
        print(name)


@app.command("rm")
def secrets_rm(name: SecretName, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Remove a secret."""
    if not guard(lambda: vault(config).delete(name)):
        fail(ClawpenError(f"no secret {name!r} in the vault", "see: clawpen secrets list"))
    print(f"removed {name}", file=sys.stderr)


@app.command("get")
def secrets_get(
    name: SecretName,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the value.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Print a secret's value (only with --reveal; the read is logged)."""
    if not reveal:
        fail(ClawpenError(f"this would print {name}'s value", "add --reveal if you mean it"))
    print(guard(lambda: vault(config).get(name, component="cli")))
