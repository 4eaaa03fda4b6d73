"""The settings clawpen.yaml holds, as validated, immutable pydantic models; ``load.py`` reads
the file into them."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    create_model,
    field_validator,
    model_validator,
)

from ..channels.base import ChannelSettings
from ..channels.registry import plugins, read_chat
from ..egress.netpolicy import LoopbackExceptions, Refused, normalize_host
from ..models import Address, JobSpec
from ..ports.limits import PortLimits
from ..schedule import JOB_NAME, ScheduleError, make_spec, parse_every
from .skills import read_skills

if TYPE_CHECKING:
    pass

DEFAULT_PATH = "clawpen.yaml"
_SCHEDULE_KEYS = ("schedule", "every", "at")
AGENT_ID = r"^[a-z0-9][a-z0-9_-]{0,39}$"
SECRET_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
REFERENCE = re.compile(rf"(env|secret):{SECRET_NAME}")
CREDENTIAL_KEY = re.compile(r"(key|token|secret|password)", re.IGNORECASE)
# server-side features that let the provider's servers reach out for a networkless agent
ServerTool = Literal["web_search", "web_fetch", "code_execution", "mcp_servers", "url_sources"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Model):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class ModelSettings(_Model):
    name: str = "claude-sonnet-4-5"
    base_url: str = "https://api.anthropic.com"
    api_key: str = Field(repr=False)
    max_tokens: int = Field(4096, ge=1, le=128_000)
    daily_token_budget: int | None = Field(None, ge=1, description="per agent, input+output")
    daily_usd_budget: float | None = Field(None, gt=0, description="per agent; needs prices")
    prices: dict[str, Price] = {}  # model name -> USD per million tokens

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


class TranscriptionSettings(_Model):
    """Speech-to-text for voice notes, through an OpenAI-compatible
    ``/v1/audio/transcriptions`` (a self-hosted whisper server, or a provider); off without
    it. ``base_url`` ends where ``/audio/transcriptions`` begins (``http://host:9000/v1``)."""

    base_url: str
    api_key: str | None = Field(None, repr=False)  # secret:NAME like every credential
    model: str = Field("whisper-1", min_length=1, max_length=200)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


class VaultSettings(_Model):
    backend: Literal["auto", "keyring", "file"] = "auto"
    key_file: Path | None = None  # the file backend's key; default data_dir/vault.key


class WebFetchSettings(_Model):
    """``web_fetch``: the orchestrator fetches public URLs for the agent; off unless enabled."""

    enabled: bool = False
    allow_domains: list[str] | None = None  # these domains and their subdomains; None: any

    @field_validator("allow_domains")
    @classmethod
    def _domains(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_host_name(v) for v in value]


class EgressSettings(_Model):
    """``egress``: hosts the agent may reach through the orchestrator's CONNECT proxy;
    ``host`` (ports 443 and 80) or ``host:port``. Nothing else, and never an inward address."""

    allow: list[str] = []

    @field_validator("allow")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            host, colon, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
            if colon and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
            out.append(_host_name(host) + (f":{port}" if colon else ""))
        return out


def _host_name(value: str) -> str:
    try:
        return normalize_host(value)
    except Refused:
        raise ValueError(f"{value!r} is not a host name") from None


MCP_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class McpServerSettings(_Model):
    """An MCP server for an agent: stdio (``command``, run inside the agent's container, with no
    network like everything there) or remote (``url``, reached through the orchestrator, which
    adds ``headers``: the credential never enters the container). Its tools reach the model as
    ``NAME__tool``."""

    name: str = Field(pattern=MCP_NAME)
    command: list[str] | None = Field(None, min_length=1)
    env: dict[str, str] = {}
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # secret:NAME welcome

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                f"mcp server {self.name!r}: give either command (stdio, in the container) or"
                " url (remote, through the orchestrator)"
            )
        if self.command is not None and self.headers:
            raise ValueError(f"mcp server {self.name!r}: headers are for a remote (url) server")
        if self.url is not None and self.env:
            raise ValueError(f"mcp server {self.name!r}: env is for a stdio (command) server")
        return self

    @property
    def remote(self) -> bool:
        return self.url is not None


class MountSettings(_Model):
    """An extra host folder for an agent; granted only by the mount allowlist (mounts.py)."""

    host: str = Field(min_length=1)
    container: str = Field(pattern=r"^/mnt/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    read_only: bool = True


Runtime = Literal["runc", "runsc"]


class DashboardSettings(_Model):
    """The web dashboard (``dashboard: {}`` turns it on): on loopback unless told otherwise,
    and behind the token `clawpen dashboard` prints."""

    host: str = "127.0.0.1"
    port: int = Field(7878, ge=0, le=65535, description="0: any free port")
    port_limits: PortLimits = PortLimits()  # connections at once, idle timeout


class TracingSettings(_Model):
    """OpenTelemetry traces (needs the ``tracing`` extra); exported with the SDK's OTLP
    exporter when it is installed and ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""

    enabled: bool = True
    service_name: str = "clawpen"


ApprovalKind = Literal["send_message", "web_fetch", "egress", "jobs", "mounts", "mcp"]
MAX_APPROVAL_TIMEOUT = 86_400  # seconds: a tool call waits a day at most


class ApprovalSettings(_Model):
    """``approvals``: which of an agent's actions wait for a person's tap (none by default),
    who may decide (chat addresses; default: the chat the task came from), and how long an
    unanswered card waits before it counts as denied."""

    ask: list[ApprovalKind] = []
    approvers: list[str] = []
    timeout: float = 600.0  # "10m", "90s", "1h" or seconds

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("write the timeout as 30s, 10m or 1h")
        try:
            seconds = float(value) if isinstance(value, float) else parse_every(value)
        except ScheduleError:
            raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 10m or 1h") from None
        if not 0 < seconds <= MAX_APPROVAL_TIMEOUT:
            raise ValueError("the timeout must be more than 0 and at most 1d")
        return float(seconds)


class AgentSettings(_Model):
    id: str = Field(pattern=AGENT_ID)
    system_prompt: str = ""
    model: str | None = None
    memory_mb: int = Field(512, ge=64)
    cpus: float = Field(0.5, gt=0, le=64)
    pids_limit: int = Field(256, ge=16)
    tmp_mb: int = Field(64, ge=1)
    idle_timeout: float = Field(1800, ge=0, description="seconds; 0 never stops it")
    # seconds idle before its container is frozen (docker pause: no CPU, memory kept; the next
    # message thaws it in milliseconds); 0 never; runtimes without pause ignore it
    pause_after: float = Field(30, ge=0)
    warm: bool = False  # start with the orchestrator and never stop for idleness
    task_timeout: float = Field(600, gt=0)
    # tasks of different conversations at work at once in its container (one conversation's
    # tasks always run in order, one at a time)
    max_parallel: int = Field(3, ge=1, le=32)
    max_steps: int = Field(25, ge=1, le=1000, description="model calls per task")
    max_task_tokens: int | None = Field(None, ge=1000, description="input+output per task")
    context_tokens: int = Field(200_000, ge=2000, description="the model's context window")
    max_model_calls: int = Field(4, ge=1, le=64, description="in flight upstream at once")
    models: list[str] | None = None  # models it may call; default: its model only
    max_tokens: int | None = Field(None, ge=1, le=128_000, description="clamp; model.max_tokens")
    daily_token_budget: int | None = Field(None, ge=1, description="overrides model's")
    daily_usd_budget: float | None = Field(None, gt=0, description="overrides model's")
    server_tools: list[ServerTool] = []  # off unless listed: they reach out for the agent
    beta_headers: list[str] = []  # anthropic-beta values it may send
    web_fetch: WebFetchSettings = WebFetchSettings()
    egress: EgressSettings = EgressSettings()
    # /workspace's own size (an ext4 image on a loop device); 0: an unlimited Docker volume
    workspace_mb: int = Field(1024, ge=0)
    mounts: list[MountSettings] = []
    # folders in the SKILL.md format, mounted read-only (the mount allowlist must grant them)
    skills: list[str] = []
    mcp_servers: list[McpServerSettings] = []
    runtime: Runtime | None = None  # default: the top-level runtime
    # light: the standard-library agent; claude-code: the Claude Agent SDK (an image variant)
    engine: Literal["light", "claude-code"] = "light"
    approvals: ApprovalSettings = ApprovalSettings()

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: list[str]) -> list[str]:
        read_skills(value)  # a malformed one is an error naming its file and field
        return value

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_names(cls, value: list[McpServerSettings]) -> list[McpServerSettings]:
        names = [server.name for server in value]
        if "clawpen" in names:
            raise ValueError("the mcp server name 'clawpen' is clawpen's own; pick another")
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two mcp servers are named {name!r}; each needs its own name")
        return value


def _channels_model() -> type[BaseModel]:
    """``channels:``: one optional block per installed platform, each its plugin's model."""
    fields: dict[str, Any] = {
        name: (plugin.settings | None, None) for name, plugin in plugins().items()
    }
    return create_model("Channels", __base__=_Model, **fields)


Channels = _channels_model()


class Pairing(_Model):
    channel: str = Field(description="platform:chat_id")
    agent: str
    # in a group channel, only messages that mention the bot reach the agent; false: all of them
    mentions_only: bool = True

    @property
    def address(self) -> Address:
        return Address.parse(self.channel)


class JobSettings(_Model):
    """A scheduled job: ``schedule`` (cron), ``every`` or ``at``, in ``timezone``."""

    name: str = Field(pattern=JOB_NAME)
    agent: str
    schedule: str | None = None
    every: str | int | None = None
    at: str | datetime | None = None
    timezone: str = "UTC"
    task: str
    deliver_to: str = Field(description="platform:chat_id, a chat paired with the agent")
    misfire: Literal["run_once", "skip"] = "run_once"
    max_failures: int = Field(5, ge=1, description="failed runs in a row before it pauses")

    def spec(self) -> JobSpec:
        """Raises ``ScheduleError`` naming what is wrong."""
        return make_spec(
            self.name,
            self.agent,
            self.task,
            Address.parse(self.deliver_to),
            self.schedule,
            self.every,
            self.at,
            self.timezone,
            self.misfire,
            self.max_failures,
            source="config",
        )


class Settings(_Model):
    data_dir: Path = Path("./clawpen-data")
    image: str = "clawpen-agent:latest"
    max_containers: int = Field(10, ge=1)
    docker_host: str | None = None
    runtime: Runtime = "runc"  # runsc: every agent under gVisor (registered with dockerd)
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="on 127.0.0.1")
    metrics_port_limits: PortLimits = PortLimits(max_connections=16)
    # data_dir/logs/clawpen.log: rotated past log_max_mb, keeping log_backups older files
    log_max_mb: int = Field(10, ge=1)
    log_backups: int = Field(5, ge=0, le=100)
    # new messages are refused (left with the platform) while less than this is free
    disk_reserve_mb: int = Field(64, ge=0)
    dashboard: DashboardSettings | None = None
    tracing: TracingSettings | None = None
    model: ModelSettings
    transcription: TranscriptionSettings | None = None  # voice notes to text; off without it
    vault: VaultSettings = VaultSettings()
    agents: list[AgentSettings] = Field(min_length=1)
    channels: Channels = Channels(cli={})  # type: ignore[valid-type]
    pairings: list[Pairing] = []
    jobs: list[JobSettings] = []
    # TESTS ONLY: 127.0.0.1:PORT targets web_fetch and egress may reach despite being loopback.
    # load_settings refuses it in a config file (see netpolicy.LoopbackExceptions).
    allow_loopback_for_tests: list[str] = []
    _secret_refs: dict[str, str] = PrivateAttr(default_factory=dict)  # dotted key -> name

    def secret_name(self, where: str) -> str | None:
        """The vault name behind a key that was written ``secret:NAME`` (``model.api_key``)."""
        return self._secret_refs.get(where)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Every cross-check at once: one ValueError, one problem a line (``validation_problems``
        splits them), so that four bad pairings take one run of `clawpen check`, not four."""
        problems: list[str] = []
        ids = [a.id for a in self.agents]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            problems.append(f"agents: duplicate id {duplicates[0]!r}; give every agent its own id")
        for i, pairing in enumerate(self.pairings):
            if pairing.agent not in ids:
                problems.append(
                    f"pairings.{i}.agent: no agent {pairing.agent!r};"
                    f" known agents: {', '.join(ids)}"
                )
            try:
                read_chat(pairing.channel, self.channel_settings())
            except ValueError as exc:
                problems.append(f"pairings.{i}.channel: {exc}")
        problems += self._check_jobs(ids)
        for i, agent in enumerate(self.agents):
            for j, approver in enumerate(agent.approvals.approvers):
                try:
                    read_chat(approver, self.channel_settings())
                except ValueError as exc:
                    problems.append(f"agents.{i}.approvals.approvers.{j}: {exc}")
        try:
            LoopbackExceptions.parse(self.allow_loopback_for_tests)
        except ValueError as exc:
            problems.append(str(exc))
        for i, agent in enumerate(self.agents):
            usd = agent.daily_usd_budget or self.model.daily_usd_budget
            for model in agent.models or [agent.model or self.model.name]:
                if usd is not None and model not in self.model.prices:
                    problems.append(
                        f"agents.{i}: a daily_usd_budget needs a price for {model!r};"
                        " add it under model.prices"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _check_jobs(self, ids: list[str]) -> list[str]:
        problems: list[str] = []
        names: set[tuple[str, str]] = set()
        for i, job in enumerate(self.jobs):
            if (job.agent, job.name) in names:  # names are per agent, as in the store
                problems.append(
                    f"jobs.{i}.name: duplicate job {job.name!r} of {job.agent}; name each one"
                )
            names.add((job.agent, job.name))
            if job.agent not in ids:
                problems.append(
                    f"jobs.{i}.agent: no agent {job.agent!r}; known agents: {', '.join(ids)}"
                )
            try:
                read_chat(job.deliver_to, self.channel_settings())
            except ValueError as exc:
                problems.append(f"jobs.{i}.deliver_to: {exc}")
            try:
                job.spec()
            except ScheduleError as exc:
                text = str(exc)
                key = next((k for k in _SCHEDULE_KEYS if getattr(job, k) is not None), "schedule")
                key = "timezone" if text.startswith("unknown time zone") else key
                known = text.split(":", 1)[0] in ("task", "misfire", "max_failures")
                problems.append(f"jobs.{i}.{text}" if known else f"jobs.{i}.{key}: {text}")
        return problems

    def channel_settings(self) -> dict[str, ChannelSettings]:
        """The configured channels, by name."""
        return {
            name: value
            for name in plugins()
            if (value := getattr(self.channels, name, None)) is not None
        }

    def agent(self, agent_id: str) -> AgentSettings:
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        raise KeyError(agent_id)
