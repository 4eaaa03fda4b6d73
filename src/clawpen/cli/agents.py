"""``clawpen agents ...``: the agents' containers in the running orchestrator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ClawpenError
from .client import call
from .common import DEFAULT_CONFIG, ConfigOption, fail

app = typer.Typer(no_args_is_help=True, help="The agents' containers.")


@app.command("list")
def agents_list(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Every agent: its container, and whether it is connected or working now."""
    for agent in call(config, "GET", "/v1/agents"):
        state = "working" if agent["busy"] else ("running" if agent["container"] else "stopped")
        if agent.get("paused"):
            state = "paused"
        container = (agent["container"] or "-")[:12]
        print(f"{agent['id']}\t{state}\t{container}")


def _act(config: Path, agent_id: str, action: str) -> None:
    call(config, "POST", f"/v1/agents/{agent_id}/{action}")


@app.command("stop")
def agents_stop(agent_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Stop an agent's container (the next message starts a fresh one)."""
    _act(config, agent_id, "stop")
    print(f"stopped {agent_id}")


@app.command("restart")
def agents_restart(agent_id: str, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Stop an agent's container and start a fresh one now."""
    _act(config, agent_id, "restart")
    print(f"restarted {agent_id}")


@app.command("reset")
def agents_reset(
    agent_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Stop an agent and delete everything in its workspace (asks first)."""
    if not yes and not typer.confirm(
        f"delete everything in {agent_id}'s workspace? this cannot be undone", default=False
    ):
        fail(ClawpenError("nothing deleted", "add --yes to skip the question"))
    _act(config, agent_id, "reset")
    print(f"reset {agent_id}: its workspace is empty")
