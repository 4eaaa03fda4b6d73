"""`clawpen service install`: a systemd unit that runs the orchestrator as a service.

``unit`` only renders text; ``install`` writes it; ``service_install`` is the command. The
hardening keeps what the orchestrator needs (the Docker socket, dropping adapters to their own
uids, mounting each agent's ext4 workspace image on a loop device) and takes away the rest: a
short capability list, no devices but the loop ones, no new privileges, no realtime, no
namespaces, no kernel modules, reboot or swap calls.

The orchestrator mounts the workspaces itself, so the unit gives it ``CAP_SYS_ADMIN`` and the
loop devices, and no option that makes a mount namespace (``ProtectSystem``, ``PrivateTmp``,
``PrivateDevices``, ``ReadWritePaths``, ``ProtectKernel*``...): a mount made in a namespace of
the service's own is invisible to dockerd, which bind-mounts it into the agent's container.
docs/service.md says why this beats a separate mount helper. It limits what a bug can do; it is
not a sandbox against a compromised orchestrator (access to the Docker socket is root on the
host anyway).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from ..config import data_dir_of, read_yaml
from ..errors import ClawpenError
from ..security.vault import KEY_FILE
from .common import DEFAULT_CONFIG, ConfigOption, guard

DEFAULT_UNIT_PATH = Path("/etc/systemd/system/clawpen.service")
VAULT_CREDENTIAL = "clawpen-vault-key"  # the name vault.py looks for in $CREDENTIALS_DIRECTORY

# setuid/setgid: adapters drop to uids of their own; kill: stopping them; chown, fowner and
# dac_override: data_dir files created by another uid (an adapter's, an older run's); sys_admin:
# mount and unmount the agents' workspace images (mount(2) and the loop ioctls need it)
CAPABILITIES = (
    "CAP_SYS_ADMIN",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_KILL",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_DAC_OVERRIDE",
)


@dataclass(frozen=True)
class ServiceSpec:
    executable: Path  # the venv's clawpen
    config: Path
    data_dir: Path
    vault_key: Path | None  # the file given to the service as its vault key credential


def unit(spec: ServiceSpec) -> str:
    """The unit file's text; every path absolute."""
    start = shlex.join([str(spec.executable), "run", "--config", str(spec.config)])
    lines = [
        "[Unit]",
        "Description=clawpen: personal Claude agents in locked-down containers",
        "Wants=network-online.target docker.service",
        "After=network-online.target docker.service",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={start}",
        f"WorkingDirectory={spec.config.parent}",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=60",
        "KillMode=mixed",
        "# the JSON log is data_dir/logs/clawpen.log (rotated; `clawpen logs`); the journal",
        "# gets what it says before that file is open",
        "StandardOutput=null",
        "StandardError=journal",
        "UMask=0077",
    ]
    if spec.vault_key is not None:
        lines.append(f"LoadCredential={VAULT_CREDENTIAL}:{spec.vault_key}")
    lines += [
        "# no mount namespace (ProtectSystem, PrivateTmp, PrivateDevices, ReadWritePaths...):",
        "# the agents' workspace mounts must be visible to dockerd; see docs/service.md",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/loop-control rw",
        "DeviceAllow=block-loop rw",
        "NoNewPrivileges=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=~@clock @cpu-emulation @module @obsolete @raw-io @reboot @swap",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        f"CapabilityBoundingSet={' '.join(CAPABILITIES)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def install(spec: ServiceSpec, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit(spec))
    path.chmod(0o644)  # systemd reads it; it holds paths, no secret


def next_steps(path: Path, name: str) -> list[str]:
    return [
        "systemctl daemon-reload",
        f"systemctl enable --now {name}",
        f"systemctl status {name}",
        "clawpen logs -f",
    ]


app = typer.Typer(no_args_is_help=True, help="Running clawpen as a system service.")


@app.command("install")
def service_install(
    unit_path: Annotated[
        Path | None, typer.Option(help="Where to write the unit (default /etc/systemd/system).")
    ] = None,
    vault_key: Annotated[
        Path | None,
        typer.Option(help="The vault key file handed to the service as a systemd credential."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Write a systemd unit that runs `clawpen run` with this config (restarted on failure,
    hardened, the vault key as a credential) and print the systemctl commands to start it."""
    config = config.resolve()
    raw = guard(lambda: read_yaml(config))
    data_dir = guard(lambda: data_dir_of(config))
    executable = Path(sys.executable).parent / "clawpen"
    if not executable.exists():
        executable = Path(shutil.which("clawpen") or "clawpen").resolve()
    if vault_key is None:
        written = (raw.get("vault") or {}).get("key_file")
        default = config.parent / written if written else data_dir / KEY_FILE
        vault_key = default if default.exists() else None
    spec = ServiceSpec(executable, config, data_dir, vault_key and vault_key.resolve())
    path = unit_path or DEFAULT_UNIT_PATH

    def write() -> None:
        try:
            install(spec, path)
        except OSError as exc:
            raise ClawpenError(
                f"cannot write {path} ({exc.strerror})", "run as root, or pass --unit-path PATH"
            ) from None

    guard(write)
    print(f"wrote {path}")
    if vault_key is not None and vault_key.resolve().is_relative_to(data_dir):
        print(
            f"the vault key is {vault_key}, inside data_dir: move it out of the data's way"
            f" (e.g. to /etc/credstore/clawpen-vault-key, mode 0600) and run this again with"
            f" --vault-key; a backup of data_dir then holds no key to its vault"
        )
    print("then run:")
    for step in next_steps(path, path.stem):
        print(f"  {step}")
