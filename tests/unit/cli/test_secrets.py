"""`clawpen secrets ...` as a person runs them: a value typed in never shows, a read is shown
only when asked for and is logged, a removed secret is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from clawpen.security.vault import KEY_ENV

SECRET = "sk-ant-" + "s3cr3t" * 6
# The config names secrets not stored yet: the commands that store them must not need them.
CONFIG = """\
data_dir: ./data
model: {name: claude-test, api_key: "secret:anthropic"}
agents: [{id: assistant}]
channels: {cli: {}, telegram: {token: "secret:telegram-bot"}}
"""


def clawpen(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    return subprocess.run(
        [sys.executable, "-m", "clawpen", *args, "--config", str(tmp_path / "clawpen.yaml")],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_secrets_commands_store_list_reveal_and_remove(tmp_path: Path) -> None:
    (tmp_path / "clawpen.yaml").write_text(CONFIG)
    stored = clawpen(tmp_path, "secrets", "set", "anthropic", stdin=SECRET + "\n")
    assert stored.returncode == 0, stored.stderr
    assert SECRET not in stored.stdout + stored.stderr
    listed = clawpen(tmp_path, "secrets", "list")
    assert listed.stdout.split() == ["anthropic"]
    hidden = clawpen(tmp_path, "secrets", "get", "anthropic")
    assert hidden.returncode != 0 and SECRET not in hidden.stdout
    assert "--reveal" in hidden.stderr
    shown = clawpen(tmp_path, "secrets", "get", "anthropic", "--reveal")
    assert shown.stdout == SECRET + "\n"
    [audit] = [json.loads(line) for line in shown.stderr.splitlines()]
    assert audit["event"] == "credential_accessed"
    assert (audit["component"], audit["name"]) == ("cli", "anthropic")
    removed = clawpen(tmp_path, "secrets", "rm", "anthropic")
    assert removed.returncode == 0
    assert clawpen(tmp_path, "secrets", "list").stdout == ""
    missing = clawpen(tmp_path, "secrets", "rm", "anthropic")
    assert missing.returncode != 0
    assert missing.stderr.startswith("clawpen: no secret 'anthropic' in the vault")


def test_check_reads_the_vault_quietly_and_audits_the_read_in_the_log_file(
    tmp_path: Path,
) -> None:
    """No raw JSON line on the terminal: `check` prints its one line; the vault read it made
    is in the orchestrator's log, where `clawpen logs` finds it."""
    (tmp_path / "clawpen.yaml").write_text(
        CONFIG.replace(', telegram: {token: "secret:telegram-bot"}', "")
    )
    assert clawpen(tmp_path, "secrets", "set", "anthropic", stdin=SECRET + "\n").returncode == 0
    checked = clawpen(tmp_path, "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    [line] = checked.stdout.splitlines()
    assert ": ok: agents assistant" in line
    logged = [json.loads(row) for row in (tmp_path / "data" / "logs" / "clawpen.log").open()]
    assert [(e["event"], e["name"]) for e in logged] == [("credential_accessed", "anthropic")]
