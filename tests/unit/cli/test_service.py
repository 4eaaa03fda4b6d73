"""Running as a service: the systemd unit `clawpen service install` writes is one systemd
accepts, runs this venv's clawpen with this config, and gives it what mounting the agents'
workspaces needs (CAP_SYS_ADMIN, the loop devices, no mount namespace of its own); the compose
file runs the orchestrator against the host's engine with its data at the same path and the
same privileges. tests/integration/test_service_real.py runs both for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from clawpen.cli.service import ServiceSpec, unit

ROOT = Path(__file__).resolve().parents[3]
NAMESPACING = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectHostname",
    "MountFlags",
)


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in text.splitlines():
        if "=" in row and not row.startswith("#"):
            key, value = row.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_runs_this_clawpen_with_this_config_and_systemd_accepts_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text("data_dir: ./data\nagents:\n  - id: assistant\n")
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data" / "vault.key").write_text("key\n")
    path = tmp_path / "clawpen.service"
    done = subprocess.run(
        [sys.executable, "-m", "clawpen", "service", "install", "--unit-path", str(path),
         "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "systemctl enable --now clawpen" in done.stdout
    found = settings(path.read_text())
    executable, *args = found["ExecStart"][0].split()
    assert Path(executable).exists() and Path(executable).parent == Path(sys.executable).parent
    assert args == ["run", "--config", str(config)]
    assert found["Restart"] == ["on-failure"]
    assert found["LoadCredential"] == [f"clawpen-vault-key:{tmp_path / 'data' / 'vault.key'}"]
    assert "CAP_SYS_ADMIN" in found["CapabilityBoundingSet"][0].split()  # mount(2), loop ioctls
    assert found["DevicePolicy"] == ["closed"]
    assert found["DeviceAllow"] == ["/dev/loop-control rw", "block-loop rw"]
    # each of these makes a mount namespace, where a workspace mount is invisible to dockerd
    for hiding in NAMESPACING:
        assert hiding not in found, hiding
    verified = subprocess.run(
        [shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr  # no unknown key, no bad value


def test_a_data_dir_outside_tmp_gets_no_mount_namespace_either() -> None:
    spec = ServiceSpec(
        Path("/opt/clawpen/.venv/bin/clawpen"),
        Path("/etc/clawpen/clawpen.yaml"),
        Path("/var/lib/clawpen"),
        None,
    )
    found = settings(unit(spec))
    for hiding in NAMESPACING:
        assert hiding not in found, hiding
    assert "LoadCredential" not in found
    assert found["WorkingDirectory"] == ["/etc/clawpen"]


def test_the_compose_file_drives_the_host_engine_with_the_data_at_the_same_path() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["clawpen"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
    # the agents' socket mounts name host paths
    here = "${PWD}"
    shared = {"type": "bind", "source": here, "target": here, "bind": {"propagation": "rshared"}}
    assert shared in service["volumes"]
    assert service["command"] == ["run", "--config", "${PWD}/clawpen.yaml"]
    assert service["restart"] == "unless-stopped"
    assert service["logging"]["options"]["max-size"]
    # what mounting the workspaces needs, and the mounts seen by the host's engine
    assert service["cap_add"] == ["SYS_ADMIN"]
    assert "apparmor=unconfined" in service["security_opt"]
    assert set(service["device_cgroup_rules"]) == {"c 10:237 rwm", "b 7:* rwm"}
    assert "/dev:/dev" in service["volumes"]  # loop devices made after the container started
    dockerfile = (ROOT / service["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["clawpen"]' in dockerfile
