"""What start-up opens on disk and in Docker before anything is built: ``prepare``.

The data dir (owner-only), its lock, the database, the agent runtime, the vault, the HTTP
token, and the secrets the redactor must know. ``app.Orchestrator`` calls it first and then
only builds objects from what it returns, so that its wiring reads top to bottom and does no
I/O of its own; a failure here (another orchestrator running, Docker away, no vault key) is a
``ClawpenError`` before anything was started.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from .config import CREDENTIAL_KEY, Settings
from .errors import ClawpenError
from .obs.redact import SECRETS
from .runtime.base import AgentRuntime
from .runtime.pool import instance_id
from .security.vault import Vault, open_vault
from .security.webauth import load_token
from .store import SQLiteStore, Store


@dataclass(frozen=True)
class Prepared:
    lock: int  # the data_dir's lock, held until the orchestrator closes it
    store: Store
    runtime: AgentRuntime
    vault: Vault
    http_token: str  # the dashboard's and the metrics port's


def prepare(
    settings: Settings,
    store: Store | None = None,
    runtime: AgentRuntime | None = None,
    vault: Vault | None = None,
) -> Prepared:
    """Open what the orchestrator needs, the given ones (tests) as they are."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    lock = hold_lock(settings.data_dir / "clawpen.lock")
    try:
        store = store if store is not None else SQLiteStore(settings.data_dir / "clawpen.db")
        runtime = runtime if runtime is not None else docker_runtime(settings)
        vault = vault or open_vault(
            settings.data_dir, settings.vault.backend, settings.vault.key_file
        )
        know_credentials(settings)
        token = load_token(settings.data_dir)
    except BaseException:
        os.close(lock)
        raise
    return Prepared(lock, store, runtime, vault, token)


def hold_lock(path: Path) -> int:
    """One orchestrator per data_dir: two would both poll Telegram and answer every message
    twice. The kernel drops the lock when the process dies, however it dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise ClawpenError(
            f"another orchestrator (pid {holder}) is running with data_dir {path.parent}",
            "stop it first, or give this one its own data_dir",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def docker_runtime(settings: Settings) -> AgentRuntime:
    from .runtime.docker import DockerRuntime, connect

    runtime = DockerRuntime(
        connect(settings.docker_host), instance_id(settings.data_dir), settings.data_dir
    )
    runtime.check_image(settings.image)
    return runtime


def know_credentials(settings: Settings) -> None:
    """The model key and every channel credential, however they were written (a literal in the
    file too), join the redactor: no log line or reply may carry them."""
    SECRETS.add(settings.model.api_key)
    if settings.transcription is not None and settings.transcription.api_key:
        SECRETS.add(settings.transcription.api_key)
    for agent in settings.agents:  # a remote MCP server's headers hold its credential
        for server in agent.mcp_servers:
            for header, value in server.headers.items():
                if header.lower() == "authorization" or CREDENTIAL_KEY.search(header):
                    SECRETS.add(value)
    for channel in settings.channel_settings().values():
        for field, value in channel.model_dump().items():
            if isinstance(value, str) and CREDENTIAL_KEY.search(field):
                SECRETS.add(value)
