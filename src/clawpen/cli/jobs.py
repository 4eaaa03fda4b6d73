"""``clawpen jobs ...``: the scheduled jobs of the running orchestrator."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from .client import call
from .common import DEFAULT_CONFIG, ConfigOption, first_agent, guard

app = typer.Typer(no_args_is_help=True, help="Scheduled jobs of the running orchestrator.")

JobName = Annotated[
    str, typer.Argument(help="The job: agent/name, or its name when one agent alone has it.")
]
JobAgent = Annotated[
    str | None, typer.Option("--agent", help="Whose job, when agents share its name.")
]


def job_path(name: str, agent: str | None, suffix: str = "") -> str:
    """``/v1/jobs/NAME?agent=ID``: names are per agent, so ``alpha/daily`` and ``--agent``
    say whose; a bare name the orchestrator resolves, or refuses as ambiguous."""
    owner, slash, bare = name.rpartition("/")
    if slash:
        agent, name = agent or owner, bare
    query = f"?agent={quote(agent, safe='')}" if agent else ""
    return f"/v1/jobs/{quote(name, safe='')}{suffix}{query}"


@app.command("list")
def jobs_list(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Every job: schedule, state, next run in the job's own time zone, last result."""
    jobs = call(config, "GET", "/v1/jobs")
    if not jobs:
        print("no jobs")
    for job in jobs:
        state = job["state"]
        if job["paused_reason"]:
            state += f" ({job['paused_reason']})"
        last = job["last_result"] or "never run"
        if job["last_error"]:
            last += f": {job['last_error']}"
        print(
            f"{job['agent']}/{job['name']}\t{job['schedule']} ({job['timezone']})\t{state}"
            f"\tnext: {job['next_run'] or '-'}\tlast: {last}"
            f"\tfailures: {job['failures']}/{job['max_failures']}\tto: {job['deliver_to']}"
        )


@app.command("add")
def jobs_add(
    name: Annotated[str, typer.Argument(help="The job's name.")],
    task: Annotated[str, typer.Option(help="What the agent is asked to do.")],
    deliver_to: Annotated[str, typer.Option(help="The chat the answer goes to: platform:id.")],
    agent: Annotated[str | None, typer.Option(help="The agent (default: the first).")] = None,
    schedule: Annotated[str | None, typer.Option(help='Cron, e.g. "0 9 * * 1-5".')] = None,
    every: Annotated[str | None, typer.Option(help="An interval, e.g. 15m.")] = None,
    at: Annotated[str | None, typer.Option(help="Once, e.g. 2026-12-01T09:00.")] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    misfire: Annotated[str, typer.Option(help="run_once or skip.")] = "run_once",
    max_failures: Annotated[int, typer.Option(help="Failed runs in a row before pausing.")] = 5,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Add a job (kept across restarts; not written to the config file)."""
    body = {
        "name": name,
        "agent": agent or guard(lambda: first_agent(config)),
        "task": task,
        "deliver_to": deliver_to,
        "schedule": schedule,
        "every": every,
        "at": at,
        "timezone": timezone,
        "misfire": misfire,
        "max_failures": max_failures,
    }
    job = call(config, "POST", "/v1/jobs", body)
    print(f"added {job['agent']}/{job['name']}: next run {job['next_run'] or '-'}")


@app.command("rm")
def jobs_rm(name: JobName, agent: JobAgent = None, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Remove a job and its history (a config-file job returns at the next start)."""
    call(config, "DELETE", job_path(name, agent))
    print(f"removed {name}")


@app.command("pause")
def jobs_pause(
    name: JobName, agent: JobAgent = None, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """Stop a job from running until it is resumed."""
    call(config, "POST", job_path(name, agent, "/pause"))
    print(f"paused {name}")


@app.command("resume")
def jobs_resume(
    name: JobName, agent: JobAgent = None, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """Run a paused job again on its schedule, its failures forgiven."""
    job = call(config, "POST", job_path(name, agent, "/resume"))
    print(f"resumed {name}: next run {job['next_run'] or '-'}")


@app.command("run-now")
def jobs_run_now(
    name: JobName, agent: JobAgent = None, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """Run a job once now, besides its schedule; its answer goes to its chat."""
    call(config, "POST", job_path(name, agent, "/run"))
    print(f"started {name}")


@app.command("history")
def jobs_history(
    name: JobName, agent: JobAgent = None, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """A job's latest runs, newest first, in the job's time zone."""
    runs = call(config, "GET", job_path(name, agent, "/runs"))
    if not runs:
        print(f"{name} has not run yet")
    for run in runs:
        manual = " (run-now)" if run["manual"] else ""
        error = f"\t{run['error']}" if run["error"] else ""
        print(f"{run['scheduled_for']}{manual}\t{run['status']}{error}")
