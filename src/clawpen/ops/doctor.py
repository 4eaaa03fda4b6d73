"""`clawpen doctor`: every prerequisite checked, each failure with its fix.

Each check is a function returning ``Check`` rows; they never raise, so one broken thing
does not hide the next. The exit status is 1 when any check failed (warnings do not count).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..channels.base import ChannelPlugin, ChannelSettings, Finding
from ..config import Settings, load_settings, read_yaml
from ..errors import ClawpenError
from ..netenv import CABundleError, NetEnv

Verdict = Literal["ok", "warn", "fail"]
LOW_FREE_MB = 500


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""


def run_checks(config: Path, env: Mapping[str, str] | None = None) -> list[Check]:
    env = os.environ if env is None else env
    checks = [_config_file(config)]
    try:
        settings = load_settings(config, env)
    except ClawpenError as exc:
        checks.append(Check("config", "fail", exc.problem, exc.fix))
        return checks
    checks.append(Check("config", "ok", f"{len(settings.agents)} agent(s), secrets resolved"))
    checks += _data_dir(settings)
    checks += vault_key(settings, env)
    checks += _docker(settings)
    net = NetEnv.from_environ(env)
    checks.append(_network(net))
    checks.append(_model(settings, net))
    checks += _channels(settings, net)
    return checks


def _network(net: NetEnv) -> Check:
    """The proxy and CA bundle every connection below uses (as the adapters and the model
    client do: ``netenv.py``); a bundle that cannot be read fails here, named."""
    try:
        net.ssl_context()
    except CABundleError as exc:
        return Check("network", "fail", exc.problem, exc.fix)
    return Check("network", "ok", net.describe())


def _config_file(config: Path) -> Check:
    """A config file others can read must not hold a credential written out in it."""
    try:
        mode = config.stat().st_mode
        raw = read_yaml(config)
    except (OSError, ClawpenError) as exc:
        return Check("config file", "fail", str(exc), "pass --config PATH to an existing file")
    literal = _literal_credentials(raw)
    if literal and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check(
            "config file",
            "fail",
            f"{config} is readable by others and holds {', '.join(literal)} written out",
            f"chmod 600 {config}, or move them to the vault (secret:NAME)",
        )
    return Check("config file", "ok", str(config))


def _literal_credentials(raw: object, where: str = "") -> list[str]:
    from ..config import CREDENTIAL_KEY, REFERENCE

    if isinstance(raw, dict):
        found = []
        for key, value in raw.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(value, str) and CREDENTIAL_KEY.search(str(key)):
                if value and not REFERENCE.fullmatch(value):
                    found.append(path)
            else:
                found += _literal_credentials(value, path)
        return found
    if isinstance(raw, list):
        return [p for i, v in enumerate(raw) for p in _literal_credentials(v, f"{where}.{i}")]
    return []


def _data_dir(settings: Settings) -> list[Check]:
    path = settings.data_dir
    if not path.exists():
        return [Check("data_dir", "ok", f"{path} will be created (owner-only) at the first run")]
    checks = []
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        checks.append(
            Check(
                "data_dir",
                "fail",
                f"{path} is mode {mode:o}: others can read it",
                f"chmod 700 {path}",
            )
        )
    elif path.stat().st_uid != os.getuid():
        checks.append(Check("data_dir", "fail", f"{path} is not yours", f"chown -R $USER {path}"))
    else:
        checks.append(Check("data_dir", "ok", f"{path} is owner-only"))
    free_mb = shutil.disk_usage(path).free // 2**20
    if free_mb < max(LOW_FREE_MB, settings.disk_reserve_mb):
        checks.append(
            Check("free space", "warn", f"{free_mb} MB free under {path}", "free disk space")
        )
    else:
        checks.append(Check("free space", "ok", f"{free_mb} MB free"))
    return checks


def vault_key(settings: Settings, env: Mapping[str, str]) -> list[Check]:
    """Where the file vault's key lives. A key file beside ``vault.enc`` (the default) guards
    nothing against whoever gets the data dir: a backup, a copied disk, a stolen laptop carries
    the lock and its key together."""
    from ..security.vault import KEY_ENV, KEY_FILE, SYSTEMD_CREDENTIAL, VAULT_FILE, FileBackend

    vault_file = settings.data_dir / VAULT_FILE
    if settings.vault.backend == "keyring" or not vault_file.exists():
        return []  # no file vault (the keychain, or no secrets yet): nothing sits beside it
    key_file = settings.vault.key_file or settings.data_dir / KEY_FILE
    source = FileBackend(vault_file, key_file, env).key_source()
    if source == KEY_ENV or source.endswith("/" + SYSTEMD_CREDENTIAL):
        return [Check("vault key", "ok", f"from {source}, not beside {vault_file}")]
    key = Path(source)
    try:
        beside = key.resolve().parent == vault_file.resolve().parent
        same_disk = key.stat().st_dev == vault_file.stat().st_dev
    except OSError as exc:
        return [
            Check("vault key", "fail", f"{key}: {exc.strerror}", f"restore it, or set {KEY_ENV}")
        ]
    if not (beside or same_disk):
        return [Check("vault key", "ok", f"{key}, on another filesystem than {vault_file}")]
    where = "in the same directory as" if beside else "on the same filesystem as"
    return [
        Check(
            "vault key",
            "warn",
            f"the vault key {key} is {where} {vault_file}: whoever copies one has both",
            f"give the key from elsewhere: {KEY_ENV}, the systemd credential"
            f" {SYSTEMD_CREDENTIAL} (clawpen service install), vault.key_file on another"
            " disk, or the OS keychain (vault.backend: keyring)",
        )
    ]


def _docker(settings: Settings) -> list[Check]:
    from ..runtime.docker import connect

    try:
        client = connect(settings.docker_host)
    except ClawpenError as exc:
        return [Check("docker", "fail", exc.problem, exc.fix)]
    checks = [Check("docker", "ok", f"engine {client.version().get('Version', '?')}")]
    try:
        client.images.get(settings.image)
        checks.append(Check("image", "ok", settings.image))
    except Exception:  # docker.errors.ImageNotFound, or the engine went away
        checks.append(
            Check(
                "image",
                "fail",
                f"{settings.image} is not built",
                f"clawpen image build --config PATH (builds {settings.image})",
            )
        )
    return checks


def _model(settings: Settings, net: NetEnv) -> Check:
    """The endpoint answers and takes the key: a models list costs no tokens."""
    url = settings.model.base_url
    headers = {"x-api-key": settings.model.api_key, "anthropic-version": "2023-06-01"}
    route = net.describe(url)
    try:
        status = asyncio.run(_get_status(f"{url}/v1/models", headers, net, timeout=10))
    except Exception as exc:  # aiohttp.ClientError, TimeoutError, a malformed URL
        problem = str(exc) or type(exc).__name__
        return Check(
            "model",
            "fail",
            f"{url} does not answer ({problem}); {route}",
            "check model.base_url, HTTPS_PROXY and SSL_CERT_FILE",
        )
    if status in (401, 403):
        return Check(
            "model",
            "fail",
            f"{url} refused the API key ({status}); {route}",
            "store the right key: clawpen secrets set anthropic-api-key",
        )
    return Check("model", "ok", f"{url} answers; {route}")


async def _get_status(url: str, headers: Mapping[str, str], net: NetEnv, timeout: float) -> int:
    import aiohttp  # imported here: a fifth of a second, and only this check needs it

    async with (
        net.session(url, timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url, headers=headers) as response,
    ):
        return response.status


def _channels(settings: Settings, net: NetEnv) -> list[Check]:
    """Each channel's own probe, where its plugin has one; they run side by side, each through
    the proxy and CA bundle its adapter uses (``channels/probing.py``: ``netenv``), named."""
    from ..channels.registry import plugins

    configured = settings.channel_settings()
    found = asyncio.run(
        _probe_all({name: (plugins()[name], block) for name, block in configured.items()})
    )
    checks = []
    for name, problem in found.items():
        base = getattr(configured[name], "api_base_url", None)
        route = f"; {net.describe(str(base))}" if base else ""
        if problem == "unprobed":
            checks.append(Check(f"channel {name}", "ok", "configured"))
        elif problem is None:
            checks.append(Check(f"channel {name}", "ok", f"reachable, token accepted{route}"))
        else:
            checks.append(Check(f"channel {name}", "fail", problem[0] + route, problem[1]))
    return checks


async def _probe_all(
    channels: Mapping[str, tuple[ChannelPlugin, ChannelSettings]],
) -> dict[str, Finding | Literal["unprobed"]]:
    async def one(plugin: ChannelPlugin, block: ChannelSettings) -> Finding | Literal["unprobed"]:
        if plugin.probe is None:
            return "unprobed"
        try:
            return await plugin.probe(block)
        except Exception as exc:  # a probe is best effort: its failure is the finding
            return (str(exc), "check the channel's settings")

    found = await asyncio.gather(*(one(plugin, block) for plugin, block in channels.values()))
    return dict(zip(channels, found, strict=True))


def render(checks: list[Check]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for check in checks:
        lines.append(f"{marks[check.verdict]}  {check.name}: {check.detail}")
        if check.fix and check.verdict != "ok":
            lines.append(f"      fix: {check.fix}")
    return "\n".join(lines)
