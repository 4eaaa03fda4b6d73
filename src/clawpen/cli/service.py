"""`clawpen service install`: a systemd unit that runs the orchestrator as a service.

``unit`` only renders text; ``install`` writes it. The hardening keeps what the orchestrator
needs (the Docker socket, ``data_dir``, dropping adapters to their own uids) and takes away the
rest of the system: a read-only file system but for ``data_dir``, no new privileges, no kernel
tunables or modules, a short capability list. It limits what a bug can do; it is not a sandbox
against a compromised orchestrator (access to the Docker socket is root on the host).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

DEFAULT_UNIT_PATH = Path("/etc/systemd/system/clawpen.service")
VAULT_CREDENTIAL = "clawpen-vault-key"  # the name vault.py looks for in $CREDENTIALS_DIRECTORY

# setuid/setgid: adapters drop to uids of their own; kill: stopping them; chown, fowner and
# dac_override: data_dir files created by another uid (an adapter's, an older run's)
CAPABILITIES = (
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
    if not any(_in_tmp(p) for p in (spec.data_dir, spec.config)):
        # agent containers mount their socket directories from data_dir by its host path: a
        # data_dir in /tmp must be the host's /tmp
        lines.append("PrivateTmp=yes")
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={spec.data_dir}",
        "ProtectHome=read-only",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        f"CapabilityBoundingSet={' '.join(CAPABILITIES)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def _in_tmp(path: Path) -> bool:
    return any(path.is_relative_to(tmp) for tmp in (Path("/tmp"), Path("/var/tmp")))


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
