"""`clawpen ...`: arguments in, results out.

This module only builds the command line: each command lives in the module of its group
(``run.py``, ``jobs.py``, ...), and is registered here in the order ``clawpen --help`` lists it.
Every ClawpenError becomes one line on stderr and a non-zero exit code (``common.guard``).
"""

from __future__ import annotations

from importlib.metadata import version as installed_version
from typing import Annotated, Any

import typer

from . import (
    agents,
    approvals,
    doctor,
    image,
    init,
    jobs,
    logs,
    pairings,
    run,
    secrets,
    service,
    status,
    usage,
)

# markdown: a docstring's hard-wrapped lines flow as one paragraph, and ``code`` shows as code
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Personal Claude agents, each in its own locked-down container, on your chat apps.",
)


def _version(show: bool) -> None:
    if show:
        print(f"clawpen {installed_version('clawpen')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Personal Claude agents, each in its own locked-down container, on your chat apps."""


for command in (
    run.run,
    doctor.check,
    init.init,
    run.chat,
    status.status,
    doctor.doctor,
    logs.logs,
    pairings.pair,
    pairings.unpair,
    pairings.pairings,
    usage.usage,
    status.dashboard,
    run.demo_model,
):
    app.command()(command)
for name, group in (
    ("image", image.app),
    ("jobs", jobs.app),
    ("secrets", secrets.app),
    ("agents", agents.app),
    ("approvals", approvals.app),
    ("service", service.app),
):
    app.add_typer(group, name=name)


def cli_command() -> Any:
    """The command line as click runs it (typer's own copy of click), flags shown bare:
    ``--version``, not ``--version <bool>``."""
    root = typer.main.get_command(app)
    for each in _walk(root):
        helps = each.get_help_option(each.context_class(each))  # made once, kept by it
        for param in [*each.params, *([helps] if helps is not None else [])]:
            if getattr(param, "is_flag", False):
                param.metavar = ""
    return root


def _walk(command: Any) -> list[Any]:
    below = getattr(command, "commands", {}).values()
    return [command, *(c for sub in below for c in _walk(sub))]


def main() -> None:
    cli_command()()


if __name__ == "__main__":
    main()
