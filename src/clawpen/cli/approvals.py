"""``clawpen approvals ...``: the requests waiting for a person's decision, decided from a
shell, and the hosts agents may reach from now on because someone allowed them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from .client import call
from .common import DEFAULT_CONFIG, ConfigOption

app = typer.Typer(
    invoke_without_command=True, help="Actions waiting for a person's decision (approvals)."
)
hosts_app = typer.Typer(
    invoke_without_command=True, help="Egress hosts allowed from now on, per agent."
)
app.add_typer(hosts_app, name="hosts")


def render(approval: dict[str, Any], now: float) -> str:
    """One request, one line (the summary's first line)."""
    summary = str(approval["summary"]).splitlines()[0] if approval["summary"] else ""
    state = approval["status"]
    if state == "pending":
        state += f" ({max(0, round((approval['expires_at'] - now) / 60))} min left)"
    elif approval["decided_by"]:
        state += f" by {approval['decided_by']} ({approval['how']})"
    return f"{approval['id']}\t{approval['agent']}\t{approval['kind']}\t{summary}\t{state}"


@app.callback()
def approvals(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Without a command: the pending requests (``list``)."""
    if ctx.invoked_subcommand is None:
        approvals_list(False, config)


@app.command("list")
def approvals_list(
    all_: Annotated[bool, typer.Option("--all", help="Recent history, decided ones too.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """The pending requests (``--all``: the last 50, whatever became of them)."""
    found = call(config, "GET", "/v1/approvals" + ("?all=1" if all_ else ""))
    if not found:
        print("no approvals" if all_ else "nothing waits for a decision")
    now = time.time()
    for approval in found:
        print(render(approval, now))


def _decide(approval_id: int, action: str, config: Path) -> None:
    decided = call(config, "POST", f"/v1/approvals/{approval_id}/{action}")
    print(render(decided, time.time()))


@app.command("allow")
def allow(
    approval_id: Annotated[int, typer.Argument(help="The request's id (clawpen approvals).")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Allow a pending request (egress: once)."""
    _decide(approval_id, "allow", config)


@app.command("deny")
def deny(
    approval_id: Annotated[int, typer.Argument(help="The request's id (clawpen approvals).")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Deny a pending request: the agent is told, and the action is not carried out."""
    _decide(approval_id, "deny", config)


@hosts_app.callback()
def hosts(ctx: typer.Context, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Without a command: the list."""
    if ctx.invoked_subcommand is None:
        hosts_list(config)


@hosts_app.command("list")
def hosts_list(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Each agent's hosts allowed "from now on" (besides egress.allow in the config)."""
    found = call(config, "GET", "/v1/approval-hosts")
    if not found:
        print("no hosts allowed from now on")
    for row in found:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["since"]))
        print(f"{row['agent']}\t{row['host']}\tsince {since}")


@hosts_app.command("revoke")
def hosts_revoke(
    agent: Annotated[str, typer.Argument(help="The agent.")],
    host: Annotated[str, typer.Argument(help="host:port, as listed.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Take a host off an agent's from-now-on list: its next connection asks again."""
    call(config, "DELETE", f"/v1/approval-hosts/{quote(agent, safe='')}/{quote(host, safe='')}")
    print(f"revoked {host} for {agent}")
