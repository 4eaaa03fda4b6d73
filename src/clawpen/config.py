"""clawpen.yaml -> validated, immutable settings.

References are resolved here and nowhere else: ``env:NAME`` reads the environment passed in
(never ``os.environ`` directly, so tests and tools can hand in their own). Every error names the
file, the key and the fix, as one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .channels.base import ChannelSettings
from .channels.registry import address_problem, plugins
from .errors import ConfigError

DEFAULT_PATH = "clawpen.yaml"
AGENT_ID = r"^[a-z0-9][a-z0-9_-]{0,39}$"
REFERENCE = re.compile(r"(env|secret):[A-Za-z_][A-Za-z0-9_.-]*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Model):
    name: str = "claude-sonnet-4-5"
    base_url: str = "https://api.anthropic.com"
    api_key: str = Field(repr=False)
    max_tokens: int = Field(4096, ge=1, le=128_000)
    daily_token_budget: int | None = Field(None, ge=1, description="per agent, input+output")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


class MountSettings(_Model):
    """An extra host folder for an agent; granted only by the mount allowlist (mounts.py)."""

    host: str = Field(min_length=1)
    container: str = Field(pattern=r"^/mnt/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    read_only: bool = True


Runtime = Literal["runc", "runsc"]


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
    max_model_calls: int = Field(4, ge=1, le=64, description="in flight upstream at once")
    # /workspace's own size (an ext4 image on a loop device); 0: an unlimited Docker volume
    workspace_mb: int = Field(1024, ge=0)
    mounts: list[MountSettings] = []
    runtime: Runtime | None = None  # default: the top-level runtime


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


class Settings(_Model):
    data_dir: Path = Path("./clawpen-data")
    image: str = "clawpen-agent:latest"
    max_containers: int = Field(10, ge=1)
    docker_host: str | None = None
    runtime: Runtime = "runc"  # runsc: every agent under gVisor (registered with dockerd)
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="on 127.0.0.1")
    model: ModelSettings
    agents: list[AgentSettings] = Field(min_length=1)
    channels: Channels = Channels(cli={})  # type: ignore[valid-type]
    pairings: list[Pairing] = []

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
        return self

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


def resolve_references(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ``env:NAME`` strings anywhere in the tree; ``where`` is the dotted key for errors."""
    if isinstance(value, dict):
        return {
            k: resolve_references(v, env, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_references(v, env, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and REFERENCE.fullmatch(value) and value.startswith("env:"):
        name = value[4:]
        if not env.get(name):
            raise ConfigError(
                f"{where}: {name} is not set", f"export {name}=... or write the value"
            )
        return env[name]
    if isinstance(value, str) and REFERENCE.fullmatch(value):
        raise ConfigError(
            f"{where}: secret references are not supported yet", "use env:NAME for now"
        )
    return value


def _format_validation(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"{loc}: required key is missing"
    if first["type"] == "extra_forbidden":
        return f"{loc}: unknown key (check the spelling)"
    return f"{loc}: {message}" if loc else message


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
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{at}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings", "see the example in README")
    return raw


def load_settings(path: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read, resolve and validate a config file; relative paths are relative to the file."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        resolved = resolve_references(raw, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.problem}", exc.fix) from None
    try:
        settings = Settings.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: {_format_validation(exc)}", "fix the value in the file"
        ) from None
    data_dir = settings.data_dir
    if not data_dir.is_absolute():
        data_dir = (path.resolve().parent / data_dir).resolve()
    return settings.model_copy(update={"data_dir": data_dir})


def data_dir_of(path: Path | str) -> Path:
    """Just the data directory, without resolving secrets: what the CLI needs to find the socket."""
    path = Path(path)
    data_dir = Path(read_yaml(path).get("data_dir", "./clawpen-data"))
    return data_dir if data_dir.is_absolute() else (path.resolve().parent / data_dir).resolve()
