"""`clawpen init`: write or update clawpen.yaml from what the environment offers.

The config it writes works from a plain shell: URLs are written out, credentials are
``secret:NAME`` references to the vault (never ``env:`` references, which would fail in a shell
without the variable, nor the values themselves). A second run adds what the environment now
offers (a channel whose token is now set, a chat to pair) and leaves everything else as it is.

``plan`` decides and touches nothing; ``write_config`` does the file I/O; ``init`` is the
command around them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ..config import data_dir_of, read_yaml, vault_of
from .common import DEFAULT_CONFIG, ConfigOption, audit_to_log, guard

DEFAULT_MODEL_URL = "https://api.anthropic.com"
DEMO_MODEL_URL = "http://127.0.0.1:8765"
MODEL_KEY_SECRET = "anthropic-api-key"


@dataclass(frozen=True)
class ChannelOffer:
    """A channel the environment can set up: its token variables, each kept in the vault under
    a name, and the variable naming a chat to pair."""

    name: str
    tokens: Mapping[str, tuple[str, str]]  # config key -> (environment variable, secret name)
    chat_variable: str


OFFERS = (
    ChannelOffer(
        "telegram", {"token": ("TELEGRAM_BOT_TOKEN", "telegram-bot-token")}, "TELEGRAM_CHAT_ID"
    ),
    ChannelOffer(
        "slack",
        {
            "bot_token": ("SLACK_BOT_TOKEN", "slack-bot-token"),
            "app_token": ("SLACK_APP_TOKEN", "slack-app-token"),
        },
        "SLACK_CHANNEL_ID",
    ),
    ChannelOffer(
        "discord", {"token": ("DISCORD_BOT_TOKEN", "discord-bot-token")}, "DISCORD_CHANNEL_ID"
    ),
)


@dataclass
class Plan:
    """What ``init`` will do: the config to write (None: unchanged), the secrets to store,
    and one line per change or per thing it could not do, for the person."""

    config: dict[str, Any] | None
    secrets: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fresh_config(model_name: str) -> dict[str, Any]:
    return {
        "data_dir": "./clawpen-data",
        "model": {
            "name": model_name,
            "base_url": DEFAULT_MODEL_URL,
            "api_key": f"secret:{MODEL_KEY_SECRET}",
        },
        "agents": [{"id": "assistant", "system_prompt": "You are a helpful assistant."}],
        "channels": {"cli": {}},
    }


def plan(existing: dict[str, Any] | None, env: Mapping[str, str], demo: bool = False) -> Plan:
    """The config ``existing`` (None: there is none yet) updated with what ``env`` offers.

    ``demo`` points the model at the offline demo model; without it a config still pointing
    there goes back to ``ANTHROPIC_BASE_URL`` or Anthropic's API.
    """
    import copy

    config = (
        copy.deepcopy(existing)
        if existing is not None
        else fresh_config(env.get("CLAWPEN_MODEL") or "claude-sonnet-4-5")
    )
    result = Plan(config=None)
    changes = [] if existing is not None else ["wrote a new config"]
    model = config.setdefault("model", {})
    url = _model_url(model.get("base_url"), env, demo)
    if url != model.get("base_url"):
        model["base_url"] = url
        if existing is not None:
            changes.append(f"model.base_url is now {url}")
    channels = config.get("channels")
    if channels is None:
        channels = config["channels"] = {}
    agent = _first_agent(config)
    for offer in OFFERS:
        changes += _offer_channel(offer, channels, config, agent, env, result)
    result.notes = changes + result.notes
    if changes:
        result.config = config
    return result


def _model_url(current: object, env: Mapping[str, str], demo: bool) -> str:
    if demo:
        return DEMO_MODEL_URL
    if env.get("ANTHROPIC_BASE_URL"):
        return env["ANTHROPIC_BASE_URL"]
    # an ``env:`` URL (as older quick starts wrote) fails in a shell without the variable
    kept = isinstance(current, str) and current not in ("", DEMO_MODEL_URL)
    if kept and not str(current).startswith("env:"):
        return str(current)
    return DEFAULT_MODEL_URL


def _first_agent(config: dict[str, Any]) -> str:
    agents = config.get("agents") or [{}]
    first = agents[0] if isinstance(agents[0], dict) else {}
    return str(first.get("id", "assistant"))


def _offer_channel(
    offer: ChannelOffer,
    channels: dict[str, Any],
    config: dict[str, Any],
    agent: str,
    env: Mapping[str, str],
    result: Plan,
) -> list[str]:
    """Add ``offer``'s channel when all its tokens are set and it is not configured; refresh
    the vault when it is configured with ``secret:`` references; pair its chat if given."""
    values = {key: env.get(variable, "") for key, (variable, _) in offer.tokens.items()}
    variables = [variable for variable, _ in offer.tokens.values()]
    if not any(values.values()):
        return []
    if not all(values.values()):
        missing = [v for v in variables if not env.get(v)]
        result.notes.append(f"{offer.name}: not added: set {' and '.join(missing)} too")
        return []
    changes = []
    block = channels.get(offer.name)
    if block is None:
        channels[offer.name] = {
            key: f"secret:{secret}" for key, (_, secret) in offer.tokens.items()
        }
        for key, (_, secret) in offer.tokens.items():
            result.secrets[secret] = values[key]
        changes.append(
            f"added the {offer.name} channel (its token is in the vault as"
            f" {', '.join(s for _, s in offer.tokens.values())})"
        )
    else:
        for key in offer.tokens:
            written = block.get(key) if isinstance(block, dict) else None
            if isinstance(written, str) and written.startswith("secret:"):
                result.secrets[written.removeprefix("secret:")] = values[key]
            else:
                result.notes.append(
                    f"{offer.name}: already configured; channels.{offer.name}.{key} left as"
                    " written (make it secret:NAME to have init keep it in the vault)"
                )
    chat = env.get(offer.chat_variable)
    if chat:
        address = f"{offer.name}:{chat}"
        pairings = config.get("pairings")
        if pairings is None:
            pairings = config["pairings"] = []
        if not any(isinstance(p, dict) and p.get("channel") == address for p in pairings):
            pairings.append({"channel": address, "agent": agent})
            changes.append(f"paired {address} with {agent}")
    return changes


def render(config: dict[str, Any]) -> str:
    header = (
        "# clawpen config (see README). Credentials live in the vault: secret:NAME values are\n"
        "# set with `clawpen secrets set NAME`. `clawpen init` adds channels whose tokens are\n"
        "# in the environment (TELEGRAM_BOT_TOKEN, SLACK_BOT_TOKEN + SLACK_APP_TOKEN,\n"
        "# DISCORD_BOT_TOKEN) and pairs TELEGRAM_CHAT_ID, SLACK_CHANNEL_ID, DISCORD_CHANNEL_ID.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a file only its owner can read (it names the vault's
    secrets, and a person may add a credential to it later), atomically."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def write_config(path: Path, config: dict[str, Any], existing: bool) -> Path | None:
    """Write the config 0600; an existing one is kept first as ``NAME.bak`` (also 0600: its
    comments do not survive the rewrite). Returns the backup's path, if any."""
    backup = None
    if existing:
        backup = path.with_name(path.name + ".bak")
        write_private(backup, path.read_text())
    write_private(path, render(config))
    return backup


def make_data_dir(path: Path) -> None:
    """The data directory, owner-only from the start (the vault and the store live there)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def init(
    demo: Annotated[
        bool, typer.Option("--demo", help="Point the model at the offline demo model.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Write the config (0600), or add to it what the environment now offers: channels whose
    tokens are set (kept in the vault, the config says secret:NAME) and chats to pair."""
    exists = config.exists()
    existing = guard(lambda: read_yaml(config)) if exists else None
    todo = plan(existing, os.environ, demo=demo)
    if todo.config is not None:
        backup = write_config(config, todo.config, exists)
        if backup is not None:
            print(f"init: the previous {config} is kept as {backup}", file=sys.stderr)
    make_data_dir(guard(lambda: data_dir_of(config)))
    if todo.secrets:
        audit_to_log(config)  # the quick start's terminal gets no JSON line for each token
        store = guard(lambda: vault_of(config))
        for name, value in todo.secrets.items():
            guard(lambda: store.set(name, value))  # noqa: B023 (called at once)
    for note in todo.notes:
        print(f"init: {note}", file=sys.stderr)
    if not todo.notes:
        print(f"init: {config} already has everything the environment offers", file=sys.stderr)
