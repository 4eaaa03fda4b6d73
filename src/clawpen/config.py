"""clawpen.yaml -> validated, immutable settings.

References are resolved here and nowhere else: ``env:NAME`` reads the environment passed in
(never ``os.environ`` directly, so tests and tools can hand in their own), ``secret:NAME`` reads
the vault (``vault.py``), opened only when the file has such a reference. Every error names the
file, the key and the fix, as one line.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .channels.base import ChannelSettings
from .channels.registry import address_problem, plugins
from .egress.netpolicy import LoopbackExceptions, Refused, normalize_host
from .errors import ClawpenError, ConfigError
from .models import JobSpec
from .obs.redact import SECRETS
from .ports.limits import PortLimits
from .schedule import JOB_NAME, ScheduleError, make_spec, parse_address

if TYPE_CHECKING:
    from .security.vault import Vault

DEFAULT_PATH = "clawpen.yaml"
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


class AgentSettings(_Model):
    id: str = Field(pattern=AGENT_ID)
    system_prompt: str = ""
    model: str | None = None
    memory_mb: int = Field(512, ge=64)
    cpus: float = Field(0.5, gt=0, le=64)
    pids_limit: int = Field(256, ge=16)
    tmp_mb: int = Field(64, ge=1)
    idle_timeout: float = Field(1800, ge=0, description="seconds; 0 never stops it")
    warm: bool = False  # start with the orchestrator and never stop for idleness
    task_timeout: float = Field(600, gt=0)
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
    runtime: Runtime | None = None  # default: the top-level runtime
    # light: the standard-library agent; claude-code: the Claude Agent SDK (an image variant)
    engine: Literal["light", "claude-code"] = "light"


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
            parse_address(self.deliver_to),
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
        ids = [a.id for a in self.agents]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"agents: duplicate id {duplicates[0]!r}; give every agent its own id")
        for i, pairing in enumerate(self.pairings):
            if pairing.agent not in ids:
                raise ValueError(
                    f"pairings.{i}.agent: no agent {pairing.agent!r};"
                    f" known agents: {', '.join(ids)}"
                )
            problem = address_problem(pairing.channel, self.channel_settings())
            if problem is not None:
                raise ValueError(f"pairings.{i}.channel: {problem}")
        self._check_jobs(ids)
        LoopbackExceptions.parse(self.allow_loopback_for_tests)
        for i, agent in enumerate(self.agents):
            usd = agent.daily_usd_budget or self.model.daily_usd_budget
            for model in agent.models or [agent.model or self.model.name]:
                if usd is not None and model not in self.model.prices:
                    raise ValueError(
                        f"agents.{i}: a daily_usd_budget needs a price for {model!r};"
                        " add it under model.prices"
                    )
        return self

    def _check_jobs(self, ids: list[str]) -> None:
        names: set[tuple[str, str]] = set()
        for i, job in enumerate(self.jobs):
            if (job.agent, job.name) in names:  # names are per agent, as in the store
                raise ValueError(
                    f"jobs.{i}.name: duplicate job {job.name!r} of {job.agent}; name each one"
                )
            names.add((job.agent, job.name))
            if job.agent not in ids:
                raise ValueError(
                    f"jobs.{i}.agent: no agent {job.agent!r}; known agents: {', '.join(ids)}"
                )
            problem = address_problem(job.deliver_to, self.channel_settings())
            if problem is not None:
                raise ValueError(f"jobs.{i}.deliver_to: {problem}")
            try:
                job.spec()
            except ScheduleError as exc:
                text = str(exc)
                key = next((k for k in _SCHEDULE_KEYS if getattr(job, k) is not None), "schedule")
                key = "timezone" if text.startswith("unknown time zone") else key
                known = text.split(":", 1)[0] in ("task", "misfire", "max_failures")
                raise ValueError(
                    f"jobs.{i}.{text}" if known else f"jobs.{i}.{key}: {text}"
                ) from None

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


_SCHEDULE_KEYS = ("schedule", "every", "at")


SecretLookup = Callable[[str], str]  # name -> value; raises ConfigError when missing


def resolve_references(
    value: Any,
    env: Mapping[str, str],
    where: str = "",
    secret: SecretLookup | None = None,
    found: dict[str, str] | None = None,
    problems: list[ConfigError] | None = None,
) -> Any:
    """Replace ``env:NAME`` and ``secret:NAME`` strings anywhere in the tree; ``where`` is the
    dotted key for errors; ``found`` collects ``{dotted key: secret name}``. Values that are
    credentials join the redactor. With ``problems``, an unresolvable reference is added to it
    and left in place (so that every mistake is reported at once) instead of raised."""
    if isinstance(value, dict):
        return {
            k: resolve_references(
                v, env, f"{where}.{k}" if where else str(k), secret, found, problems
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            resolve_references(v, env, f"{where}.{i}", secret, found, problems)
            for i, v in enumerate(value)
        ]
    if not (isinstance(value, str) and REFERENCE.fullmatch(value)):
        return value
    if problems is None:
        return _resolve_one(value, env, where, secret, found)
    try:
        return _resolve_one(value, env, where, secret, found)
    except ConfigError as exc:
        problems.append(exc)
        return value


def _resolve_one(
    value: str,
    env: Mapping[str, str],
    where: str,
    secret: SecretLookup | None,
    found: dict[str, str] | None,
) -> str:
    kind, name = value.split(":", 1)
    if kind == "env":
        if not env.get(name):
            raise ConfigError(
                f"{where}: {name} is not set", f"export {name}=... or use secret:NAME"
            )
        if CREDENTIAL_KEY.search(where.rsplit(".", 1)[-1]):
            SECRETS.add(env[name])
        return env[name]
    if secret is None:
        raise ConfigError(f"{where}: secret:{name} needs the vault", "")
    try:
        resolved = secret(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.problem}", exc.fix) from None
    if found is not None:
        found[where] = name
    return resolved


def _has_secrets(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secrets(v) for v in value)
    return (
        isinstance(value, str) and value.startswith("secret:") and bool(REFERENCE.fullmatch(value))
    )


def vault_of(path: Path | str, env: Mapping[str, str] | None = None) -> Vault:
    """The vault a config file names (its data_dir and ``vault:`` block), without resolving or
    validating the rest: ``clawpen secrets set`` must work before the config is complete."""
    from .security.vault import open_vault

    path = Path(path)
    raw = read_yaml(path)
    block = raw.get("vault") or {}
    try:
        settings = VaultSettings.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: vault.{_format_validation(exc)}", "fix the value in the file"
        ) from None
    key_file = settings.key_file
    if key_file is not None and not key_file.is_absolute():
        key_file = (path.resolve().parent / key_file).resolve()
    return open_vault(data_dir_of(path), settings.backend, key_file, env)


def _format_validation(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first problem, in words (see ``validation_problems`` for all of them)."""
    return validation_problems(error, model)[0]


# Rules written as regular expressions in the models, said in words for people.
PATTERN_WORDS = {
    AGENT_ID: "must be 1 to 40 lowercase letters, digits, '_' or '-', starting with a letter or"
    " digit (e.g. assistant)",
    JOB_NAME: "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    r"^(debug|info|warning|error)$": "must be one of debug, info, warning, error",
}


def validation_problems(error: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Every problem pydantic found, one line each: the dotted key and what is wrong, a
    misspelt key with the nearest known one, a pattern as the rule it stands for."""
    problems = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        kind = item["type"]
        if kind == "missing":
            problems.append(f"{loc}: required key is missing")
        elif kind == "extra_forbidden":
            known = _known_keys(model, item["loc"][:-1]) if model is not None else []
            guess = difflib.get_close_matches(str(item["loc"][-1]), known, n=1, cutoff=0.6)
            hint = f"did you mean {guess[0]}?" if guess else "check the spelling"
            if known and not guess:
                hint += f" (known keys here: {', '.join(known)})"
            problems.append(f"{loc}: unknown key; {hint}")
        elif kind == "string_pattern_mismatch":
            pattern = str((item.get("ctx") or {}).get("pattern", ""))
            rule = PATTERN_WORDS.get(pattern, "does not have the expected form")
            problems.append(f"{loc}: {item['input']!r} {rule}")
        else:
            problems.append(f"{loc}: {message}" if loc else message)
    return problems


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at ``loc`` (a path of keys and list indexes), or []."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # a list element: the annotation was already unwrapped to the item type
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]``, ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# PyYAML's problems, as a sentence a person can act on.
YAML_WORDS = {
    "mapping values are not allowed here": "a ':' where none can be (a value that contains"
    " ': ' needs quotes, or the line is indented too far)",
    "found character '\\t' that cannot start any token": "a tab (indent with spaces only)",
    "could not find expected ':'": "a line that is not 'key: value' (a missing ':')",
    "found undefined alias": "a '*' that names no '&' anchor (quote a value starting with '*')",
}


def _yaml_sentence(problem: str) -> str:
    for known, words in YAML_WORDS.items():
        if problem.startswith(known):
            return words
    if problem.startswith("expected ',' or ']'"):
        return "a list opened with '[' is not closed with ']'"
    if problem.startswith("expected ',' or '}'"):
        return "a mapping opened with '{' is not closed with '}'"
    if "expected <block end>" in problem:
        return "the indentation does not line up with the lines above"
    return f"the YAML cannot be read here ({problem})"


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file", "create it (see README) or pass --config PATH"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{path}: cannot read the config file ({reason})", "pass a readable UTF-8 YAML file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{at} {_yaml_sentence(problem)}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings", "see the example in README")
    return raw


def load_settings(path: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read, resolve and validate a config file; relative paths are relative to the file."""
    path = Path(path)
    raw = read_yaml(path)
    if "allow_loopback_for_tests" in raw:
        raise ConfigError(
            f"{path}: allow_loopback_for_tests: only tests may set this, never a config file",
            "remove it: web_fetch and egress never reach loopback in production",
        )
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    problems: list[ConfigError] = []
    try:
        lookup = _vault_lookup(vault_of(path, env)) if _has_secrets(raw) else None
        resolved = resolve_references(raw, env, secret=lookup, found=found, problems=problems)
    except ClawpenError as exc:  # the vault itself cannot be read
        raise ConfigError(f"{path}: {exc.problem}", exc.fix) from None
    try:
        settings = Settings.model_validate(resolved)
    except ValidationError as exc:
        unresolved = {p.problem.split(":", 1)[0] for p in problems}
        for line in validation_problems(exc, Settings):
            if line.split(":", 1)[0] not in unresolved:  # not a second word on the same key
                problems.append(ConfigError(line, "fix the value in the file"))
    if len(problems) == 1:
        raise ConfigError(f"{path}: {problems[0].problem}", problems[0].fix)
    if problems:
        lines = "".join(f"\n  {p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problems:{lines}", "fix them all in the file")
    data_dir = settings.data_dir
    if not data_dir.is_absolute():
        data_dir = (path.resolve().parent / data_dir).resolve()
    settings = settings.model_copy(update={"data_dir": data_dir})
    settings._secret_refs = found
    return settings


def _vault_lookup(vault: Vault) -> SecretLookup:
    def lookup(name: str) -> str:
        try:
            return vault.get(name, component="config")
        except ClawpenError as exc:
            raise ConfigError(exc.problem, exc.fix) from None

    return lookup


def data_dir_of(path: Path | str) -> Path:
    """Just the data directory, without resolving secrets: what the CLI needs to find the socket."""
    path = Path(path)
    data_dir = Path(read_yaml(path).get("data_dir", "./clawpen-data"))
    return data_dir if data_dir.is_absolute() else (path.resolve().parent / data_dir).resolve()
