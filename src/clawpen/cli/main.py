"""`clawpen ...`: arguments in, results out.

Every ClawpenError becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from ..config import DEFAULT_PATH, data_dir_of, load_settings, read_yaml
from ..errors import ClawpenError, OrchestratorUnavailable

if TYPE_CHECKING:
    from ..config import Settings
    from ..obs.logfile import RotatingFile
    from ..security.vault import Vault

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Personal Claude agents, each in its own locked-down container, on your chat apps.",
)
image_app = typer.Typer(no_args_is_help=True, help="The agent image.")
app.add_typer(image_app, name="image")
jobs_app = typer.Typer(no_args_is_help=True, help="Scheduled jobs of the running orchestrator.")
app.add_typer(jobs_app, name="jobs")
secrets_app = typer.Typer(no_args_is_help=True, help="Credentials in the vault.")
app.add_typer(secrets_app, name="secrets")

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", envvar="CLAWPEN_CONFIG", help="The config file.")
]
T = TypeVar("T")


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"clawpen {version('clawpen')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Personal Claude agents, each in its own locked-down container, on your chat apps."""


def _fail(error: ClawpenError) -> NoReturn:
    print(f"clawpen: {error}", file=sys.stderr)
    raise typer.Exit(error.exit_code)


def _guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except ClawpenError as error:
        _fail(error)
        raise AssertionError("unreachable") from None


@app.command()
def run(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Run the orchestrator in the foreground (JSON logs on stdout)."""
    from ..app import Orchestrator, run_until_signal
    from ..obs import logging as clawpen_logging

    clawpen_logging.configure("info")  # reading secret: references is logged
    settings = _guard(lambda: load_settings(config))
    clawpen_logging.configure(settings.log_level, file=_guard(lambda: _log_file(settings)))
    orchestrator = _guard(lambda: Orchestrator(settings))
    _guard(lambda: run_until_signal(orchestrator))


def _log_file(settings: Settings) -> RotatingFile:
    from ..obs.logfile import RotatingFile, log_path
    from .init import make_data_dir

    try:
        make_data_dir(settings.data_dir)
        return RotatingFile(
            log_path(settings.data_dir), settings.log_max_mb * 2**20, settings.log_backups
        )
    except OSError as exc:
        raise ClawpenError(
            f"cannot write the log under {settings.data_dir} ({exc.strerror})",
            "make data_dir writable by this user",
        ) from None


@app.command()
def check(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Validate the config file and print what it sets up."""
    _audit_to_stderr()
    settings = _guard(lambda: load_settings(config))
    agents = ", ".join(a.id for a in settings.agents)
    channels = ", ".join(settings.channel_settings())
    print(f"{config}: ok: agents {agents}; channels {channels}; data in {settings.data_dir}")


@app.command()
def init(
    demo: Annotated[
        bool, typer.Option("--demo", help="Point the model at the offline demo model.")
    ] = False,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Write the config (0600), or add to it what the environment now offers: channels whose
    tokens are set (kept in the vault, the config says secret:NAME) and chats to pair."""
    import os

    from . import init as setup

    exists = config.exists()
    existing = _guard(lambda: read_yaml(config)) if exists else None
    todo = setup.plan(existing, os.environ, demo=demo)
    if todo.config is not None:
        backup = setup.write_config(config, todo.config, exists)
        if backup is not None:
            print(f"init: the previous {config} is kept as {backup}", file=sys.stderr)
    setup.make_data_dir(_guard(lambda: data_dir_of(config)))
    if todo.secrets:
        vault = _vault(config)
        for name, value in todo.secrets.items():
            _guard(lambda: vault.set(name, value))  # noqa: B023 (called at once)
    for note in todo.notes:
        print(f"init: {note}", file=sys.stderr)
    if not todo.notes:
        print(f"init: {config} already has everything the environment offers", file=sys.stderr)


def _admin(config: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    from ..ops.admin import ADMIN_SOCKET

    socket = data_dir_of(config) / ADMIN_SOCKET
    unavailable = OrchestratorUnavailable(
        f"no orchestrator answers at {socket}", f"start it: clawpen run --config {config}"
    )
    if not socket.exists():
        raise unavailable
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://clawpen", timeout=None) as client:
        try:
            response = client.request(method, path, json=body)
        except httpx.TransportError:
            raise unavailable from None
    data = response.json()
    if response.status_code >= 400:
        raise ClawpenError(data.get("error", response.text), "")
    return data


def _first_agent(config: Path) -> str:
    agents = read_yaml(config).get("agents") or [{}]
    return str(agents[0].get("id", "assistant"))


@app.command()
def chat(
    message: Annotated[
        str | None, typer.Argument(help="Send one message and print the reply.")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent id.")] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Continue this named conversation.")
    ] = None,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Chat with an agent through the running orchestrator: each run is a conversation of its
    own (name one with --session to come back to it)."""
    import uuid

    from . import chatui

    agent_id = agent or _guard(lambda: _first_agent(config))
    conversation = session or uuid.uuid4().hex[:12]

    def ask(text: str) -> str:
        body = {"agent": agent_id, "text": text, "session": conversation}
        return str(_guard(lambda: _admin(config, "POST", "/v1/chat", body))["reply"])

    if message is not None:
        print(chatui.shown(ask(message)))
        return
    _guard(lambda: _admin(config, "GET", "/v1/status"))  # no orchestrator: say so before typing
    print(f"chatting with {agent_id} (Ctrl-D to leave)", file=sys.stderr)
    if sys.stdin.isatty() and sys.stdout.isatty():
        history = _guard(lambda: data_dir_of(config)) / "chat_history"
        chatui.interactive(agent_id, ask, history if history.parent.is_dir() else None)
    else:
        chatui.piped(agent_id, ask)  # piped input gets clean output


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, as scripts read it.")] = False,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Agents, containers, queues, jobs, channel health and spend today (JSON when piped)."""
    from .views import render_status

    found = _guard(lambda: _admin(config, "GET", "/v1/status"))
    if as_json or not sys.stdout.isatty():
        print(json.dumps(found, indent=2))
    else:
        print(render_status(found))


@app.command()
def doctor(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Check every prerequisite (Docker, image, config, secrets, data_dir, disk, model, channels)
    and say how to fix what fails; exits 1 if anything failed."""
    from ..ops.doctor import render, run_checks

    _audit_to_stderr()
    checks = run_checks(config)
    print(render(checks))
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        print(f"{len(failed)} check(s) failed", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
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
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """The orchestrator's log (data_dir/logs/clawpen.log, rotated): readable on a terminal,
    JSON lines when piped; AGENT keeps that agent's lines, -f follows."""
    from ..obs.logfile import log_path
    from . import logview

    path = log_path(_guard(lambda: data_dir_of(config)))
    if not logview.log_files(path) and not follow:
        _fail(ClawpenError(f"no log yet ({path} does not exist)", "start: clawpen run"))
    raw = as_json if as_json is not None else not sys.stdout.isatty()
    show = (lambda line: line) if raw else logview.human
    until = logview.size(path)  # the tail ends here and following starts here: no line lost
    for line in logview.tail(path, lines, agent, until) if lines else []:
        print(show(line), flush=follow)
    if follow:
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            for line in logview.follow(path, agent, start=until):
                print(show(line), flush=True)


agents_app = typer.Typer(no_args_is_help=True, help="The agents' containers.")
app.add_typer(agents_app, name="agents")


@agents_app.command("list")
def agents_list(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Every agent: its container, and whether it is connected or working now."""
    for agent in _guard(lambda: _admin(config, "GET", "/v1/agents")):
        state = "working" if agent["busy"] else ("running" if agent["container"] else "stopped")
        container = (agent["container"] or "-")[:12]
        print(f"{agent['id']}\t{state}\t{container}")


def _agent_action(config: Path, agent_id: str, action: str) -> None:
    _guard(lambda: _admin(config, "POST", f"/v1/agents/{agent_id}/{action}"))


@agents_app.command("stop")
def agents_stop(agent_id: str, config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Stop an agent's container (the next message starts a fresh one)."""
    _agent_action(config, agent_id, "stop")
    print(f"stopped {agent_id}")


@agents_app.command("restart")
def agents_restart(agent_id: str, config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Stop an agent's container and start a fresh one now."""
    _agent_action(config, agent_id, "restart")
    print(f"restarted {agent_id}")


@agents_app.command("reset")
def agents_reset(
    agent_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Stop an agent and delete everything in its workspace (asks first)."""
    if not yes and not typer.confirm(
        f"delete everything in {agent_id}'s workspace? this cannot be undone", default=False
    ):
        _fail(ClawpenError("nothing deleted", "add --yes to skip the question"))
    _agent_action(config, agent_id, "reset")
    print(f"reset {agent_id}: its workspace is empty")


@app.command()
def pair(
    chat: Annotated[str, typer.Argument(help="The chat, as platform:chat_id; or 'approve'.")],
    agent_or_code: Annotated[
        str | None, typer.Argument(help="The agent that answers it; after 'approve', the code.")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="The agent.")] = None,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Pair a chat with an agent, at once and across restarts:
    ``clawpen pair telegram:123 assistant``, or, for a chat that was given a pairing code,
    ``clawpen pair approve ABCD-EFGH --agent assistant``."""
    if chat == "approve":
        if not agent_or_code or not agent:
            _fail(
                ClawpenError(
                    "missing the code or --agent", "clawpen pair approve CODE --agent AGENT_ID"
                )
            )
        body = {"code": agent_or_code, "agent": agent}
        done = _guard(lambda: _admin(config, "POST", "/v1/pairings/approve", body))
        print(f"paired {done['chat']} with {done['agent']}")
        return
    agent = agent or agent_or_code
    if not agent:
        _fail(ClawpenError("missing the agent", "clawpen pair PLATFORM:CHAT_ID AGENT_ID"))
    body = {"chat": chat, "agent": agent}
    _guard(lambda: _admin(config, "POST", "/v1/pairings", body))
    print(f"paired {chat} with {agent}")


@app.command()
def unpair(
    chat: Annotated[str, typer.Argument(help="The chat, as platform:chat_id.")],
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Stop a chat from reaching any agent (config-file pairings return at the next start)."""
    from urllib.parse import quote

    _guard(lambda: _admin(config, "DELETE", f"/v1/pairings/{quote(chat, safe='')}"))
    print(f"unpaired {chat}")


@app.command()
def pairings(
    pending: Annotated[
        bool, typer.Option("--pending", help="Chats that wrote but are not paired.")
    ] = False,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """List the chats paired with agents; with --pending, the chats waiting to be paired (who
    wrote from an unpaired chat in the last week), each with the command that pairs it."""
    if pending:
        from .views import render_strangers

        chats = _guard(lambda: _admin(config, "GET", "/v1/strangers"))
        agent = _guard(lambda: _first_agent(config))
        print(render_strangers(chats, agent, time.time()))
    else:
        for chat, agent in _guard(lambda: _admin(config, "GET", "/v1/pairings")).items():
            print(f"{chat}\t{agent}")
    for code in _guard(lambda: _admin(config, "GET", "/v1/pairings/pending")):
        minutes = max(0, round((code["expires_at"] - time.time()) / 60))
        print(f"{code['chat']}\t(waiting for approval; its code expires in {minutes} min)")


JobName = Annotated[
    str, typer.Argument(help="The job: agent/name, or its name when one agent alone has it.")
]
JobAgent = Annotated[
    str | None, typer.Option("--agent", help="Whose job, when agents share its name.")
]


def _job_path(name: str, agent: str | None, suffix: str = "") -> str:
    """``/v1/jobs/NAME?agent=ID``: names are per agent, so ``alpha/daily`` and ``--agent``
    say whose; a bare name the orchestrator resolves, or refuses as ambiguous."""
    from urllib.parse import quote

    owner, slash, bare = name.rpartition("/")
    if slash:
        agent, name = agent or owner, bare
    query = f"?agent={quote(agent, safe='')}" if agent else ""
    return f"/v1/jobs/{quote(name, safe='')}{suffix}{query}"


@jobs_app.command("list")
def jobs_list(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Every job: schedule, state, next run in the job's own time zone, last result."""
    jobs = _guard(lambda: _admin(config, "GET", "/v1/jobs"))
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


@jobs_app.command("add")
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
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Add a job (kept across restarts; not written to the config file)."""
    body = {
        "name": name,
        "agent": agent or _guard(lambda: _first_agent(config)),
        "task": task,
        "deliver_to": deliver_to,
        "schedule": schedule,
        "every": every,
        "at": at,
        "timezone": timezone,
        "misfire": misfire,
        "max_failures": max_failures,
    }
    job = _guard(lambda: _admin(config, "POST", "/v1/jobs", body))
    print(f"added {job['agent']}/{job['name']}: next run {job['next_run'] or '-'}")


@jobs_app.command("rm")
def jobs_rm(
    name: JobName, agent: JobAgent = None, config: ConfigOption = Path(DEFAULT_PATH)
) -> None:
    """Remove a job and its history (a config-file job returns at the next start)."""
    _guard(lambda: _admin(config, "DELETE", _job_path(name, agent)))
    print(f"removed {name}")


@jobs_app.command("pause")
def jobs_pause(
    name: JobName, agent: JobAgent = None, config: ConfigOption = Path(DEFAULT_PATH)
) -> None:
    """Stop a job from running until it is resumed."""
    _guard(lambda: _admin(config, "POST", _job_path(name, agent, "/pause")))
    print(f"paused {name}")


@jobs_app.command("resume")
def jobs_resume(
    name: JobName, agent: JobAgent = None, config: ConfigOption = Path(DEFAULT_PATH)
) -> None:
    """Run a paused job again on its schedule, its failures forgiven."""
    job = _guard(lambda: _admin(config, "POST", _job_path(name, agent, "/resume")))
    print(f"resumed {name}: next run {job['next_run'] or '-'}")


@jobs_app.command("run-now")
def jobs_run_now(
    name: JobName, agent: JobAgent = None, config: ConfigOption = Path(DEFAULT_PATH)
) -> None:
    """Run a job once now, besides its schedule; its answer goes to its chat."""
    _guard(lambda: _admin(config, "POST", _job_path(name, agent, "/run")))
    print(f"started {name}")


@jobs_app.command("history")
def jobs_history(
    name: JobName, agent: JobAgent = None, config: ConfigOption = Path(DEFAULT_PATH)
) -> None:
    """A job's latest runs, newest first, in the job's time zone."""
    runs = _guard(lambda: _admin(config, "GET", _job_path(name, agent, "/runs")))
    if not runs:
        print(f"{name} has not run yet")
    for run in runs:
        manual = " (run-now)" if run["manual"] else ""
        error = f"\t{run['error']}" if run["error"] else ""
        print(f"{run['scheduled_for']}{manual}\t{run['status']}{error}")


def _audit_to_stderr() -> None:
    """Vault reads are logged (``credential_accessed``) as JSON lines on stderr, leaving stdout
    to the command's own output."""
    from ..obs import logging as clawpen_logging

    clawpen_logging.configure("info", stream=sys.stderr)


SecretName = Annotated[str, typer.Argument(help="The secret's name, as in secret:NAME.")]


def _vault(config: Path) -> Vault:
    from ..config import vault_of

    _audit_to_stderr()
    return _guard(lambda: vault_of(config))


def _check_name(name: str) -> None:
    from ..config import SECRET_NAME

    if not re.fullmatch(SECRET_NAME, name):
        _fail(ClawpenError(f"{name!r} is not a secret name", "use letters, digits, _ . -"))


@secrets_app.command("set")
def secrets_set(name: SecretName, config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Store a secret: typed at a hidden prompt, or read from standard input when that is not
    a terminal (never from the command line, where other users' `ps` would see it)."""
    import getpass

    _check_name(name)
    vault = _vault(config)
    tty = sys.stdin.isatty()
    value = getpass.getpass(f"{name}: ") if tty else sys.stdin.read().rstrip("\r\n")
    _guard(lambda: vault.set(name, value))
    print(f"stored {name} ({vault.backend.name} vault)", file=sys.stderr)


@secrets_app.command("list")
def secrets_list(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """The names of the stored secrets (never their values)."""
    for name in _guard(lambda: _vault(config).list()):
        print(name)


@secrets_app.command("rm")
def secrets_rm(name: SecretName, config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Remove a secret."""
    if not _guard(lambda: _vault(config).delete(name)):
        _fail(ClawpenError(f"no secret {name!r} in the vault", "see: clawpen secrets list"))
    print(f"removed {name}", file=sys.stderr)


@secrets_app.command("get")
def secrets_get(
    name: SecretName,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the value.")] = False,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Print a secret's value (only with --reveal; the read is logged)."""
    if not reveal:
        _fail(ClawpenError(f"this would print {name}'s value", "add --reveal if you mean it"))
    print(_guard(lambda: _vault(config).get(name, component="cli")))


@app.command()
def usage(
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    days: Annotated[int, typer.Option("--days", help="The last N UTC days.", min=1)] = 7,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Model tokens and cost per agent and UTC day (from the store; no orchestrator needed)."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from ..store import SQLiteStore

    database = _guard(lambda: data_dir_of(config)) / "clawpen.db"
    if not database.exists():
        _fail(ClawpenError(f"no usage recorded yet ({database} does not exist)"))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = (today - timedelta(days=days - 1)).timestamp()

    async def read() -> list[Any]:
        store = SQLiteStore(database)
        try:
            return await store.usage_by_day(since, agent)
        finally:
            await store.close()

    rows = _guard(lambda: asyncio.run(read()))
    print("day\tagent\tmodel\tcalls\tinput\toutput\tusd")
    for row in rows:
        estimated = f" ({row.estimated} estimated)" if row.estimated else ""
        print(
            f"{row.day}\t{row.agent_id}\t{row.model}\t{row.calls}{estimated}\t"
            f"{row.input_tokens}\t{row.output_tokens}\t{row.usd:.4f}"
        )


@app.command()
def dashboard(config: ConfigOption = Path(DEFAULT_PATH)) -> None:
    """Print the dashboard's address, with its token (keep it to yourself: it opens the
    dashboard and the metrics port)."""
    found = _guard(lambda: _admin(config, "GET", "/v1/dashboard"))
    print(found["url"])
    print(f"token: {found['token']}  (for scripts and Prometheus: Authorization: Bearer ...)")


@image_app.command("build")
def image_build(
    tag: Annotated[
        str | None, typer.Option(help="Image tag (default: the config's image).")
    ] = None,
    base: Annotated[
        str, typer.Option(help="auto, debootstrap, or an image reference to build FROM.")
    ] = "auto",
    engine: Annotated[
        list[str] | None,
        typer.Option(help="Also build this engine's variant (default: those the agents use)."),
    ] = None,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Build the agent image the config names (``image:``), on its ``docker_host`` (no
    registry needed: falls back to a debootstrap base), and the variant of every other engine
    its agents use (``engine: claude-code``)."""
    from ..runtime.docker import connect
    from ..runtime.image import build_agent_image, build_engine_image, engine_tag

    raw = _guard(lambda: read_yaml(config)) if config.exists() else {}
    image = tag or str(raw.get("image") or "clawpen-agent:latest")
    docker_host = raw.get("docker_host")
    listed = raw.get("agents")
    agents: list[Any] = listed if isinstance(listed, list) else []
    used = {str(a.get("engine")) for a in agents if isinstance(a, dict) and a.get("engine")}
    engines = sorted((set(engine or []) | used) - {"light"})

    def progress(line: str) -> None:
        print(line, flush=True)

    def build() -> str:
        return build_agent_image(connect(docker_host), tag=image, base=base, progress=progress)

    image_id = _guard(build)
    print(f"built {image} ({image_id[:19]})")
    for name in engines:

        def build_variant(name: str = name) -> str:
            client = connect(docker_host)
            return build_engine_image(
                client, name, tag=image, base=base, progress=progress, agent_image_built=True
            )

        variant_id = _guard(build_variant)
        print(f"built {engine_tag(image, name)} ({variant_id[:19]})")


service_app = typer.Typer(no_args_is_help=True, help="Running clawpen as a system service.")
app.add_typer(service_app, name="service")


@service_app.command("install")
def service_install(
    unit_path: Annotated[
        Path | None, typer.Option(help="Where to write the unit (default /etc/systemd/system).")
    ] = None,
    vault_key: Annotated[
        Path | None,
        typer.Option(help="The vault key file handed to the service as a systemd credential."),
    ] = None,
    config: ConfigOption = Path(DEFAULT_PATH),
) -> None:
    """Write a systemd unit that runs `clawpen run` with this config (restarted on failure,
    hardened, the vault key as a credential) and print the systemctl commands to start it."""
    import shutil

    from ..security.vault import KEY_FILE
    from . import service

    config = config.resolve()
    raw = _guard(lambda: read_yaml(config))
    data_dir = _guard(lambda: data_dir_of(config))
    executable = Path(sys.executable).parent / "clawpen"
    if not executable.exists():
        executable = Path(shutil.which("clawpen") or "clawpen").resolve()
    if vault_key is None:
        written = (raw.get("vault") or {}).get("key_file")
        default = config.parent / written if written else data_dir / KEY_FILE
        vault_key = default if default.exists() else None
    spec = service.ServiceSpec(executable, config, data_dir, vault_key and vault_key.resolve())
    path = unit_path or service.DEFAULT_UNIT_PATH

    def write() -> None:
        try:
            service.install(spec, path)
        except OSError as exc:
            raise ClawpenError(
                f"cannot write {path} ({exc.strerror})", "run as root, or pass --unit-path PATH"
            ) from None

    _guard(write)
    print(f"wrote {path}")
    if vault_key is not None and vault_key.resolve().is_relative_to(data_dir):
        print(
            f"the vault key is {vault_key}, inside data_dir: move it out of the data's way"
            f" (e.g. to /etc/credstore/clawpen-vault-key, mode 0600) and run this again with"
            f" --vault-key; a backup of data_dir then holds no key to its vault"
        )
    print("then run:")
    for step in service.next_steps(path, path.stem):
        print(f"  {step}")


@app.command("demo-model")
def demo_model(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    api_key: Annotated[str | None, typer.Option(help="Key to require.")] = None,
) -> None:
    """Serve the offline fake model (echo, and `run: CMD` for the shell tool) for trying clawpen
    without an Anthropic key."""
    import asyncio

    from ..demo.model import serve_forever

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(port, api_key))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
