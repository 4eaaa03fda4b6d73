"""The vault: secrets survive a round trip, stay private on disk, and fail in one clear line."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend as KeyringBase
from keyring.backends import fail, null

from clawpen.config import load_settings
from clawpen.errors import ClawpenError, ConfigError
from clawpen.obs import logging as clawpen_logging
from clawpen.security.vault import (
    KEY_ENV,
    FileBackend,
    KeyringBackend,
    Vault,
    VaultError,
    keyring_available,
    new_key,
    open_vault,
)

SECRET = "sk-ant-" + "s3cr3t" * 6


@pytest.fixture
def log_events() -> Iterator[list[dict[str, object]]]:
    clawpen_logging.configure("info", io.StringIO())
    seen: list[dict[str, object]] = []
    stop = clawpen_logging.subscribe(lambda event: seen.append(dict(event)))
    yield seen
    stop()
    clawpen_logging.configure("info")


def file_vault(tmp_path: Path, env: dict[str, str] | None = None) -> Vault:
    return open_vault(tmp_path / "data", "file", env=env or {})


def one_line_error(error: pytest.ExceptionInfo[ClawpenError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# -- the encrypted file -----------------------------------------------------------------------


def test_secret_round_trips_through_the_encrypted_file(tmp_path: Path) -> None:
    vault = file_vault(tmp_path)
    vault.set("anthropic", SECRET)
    vault.set("telegram", "123:tg-token-value")
    again = file_vault(tmp_path)  # a fresh process reading the same files
    assert again.get("anthropic", component="test") == SECRET
    assert again.list() == ["anthropic", "telegram"]
    assert again.delete("telegram") is True
    assert again.delete("telegram") is False
    assert file_vault(tmp_path).list() == ["anthropic"]


def test_the_value_is_not_in_the_vault_file_and_both_files_are_owner_only(
    tmp_path: Path,
) -> None:
    vault = file_vault(tmp_path)
    vault.set("anthropic", SECRET)
    data = tmp_path / "data"
    assert SECRET.encode() not in (data / "vault.enc").read_bytes()
    for name in ("vault.enc", "vault.key"):
        assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_a_key_from_the_environment_is_used_and_no_key_file_is_written(tmp_path: Path) -> None:
    env = {KEY_ENV: new_key()}
    file_vault(tmp_path, env).set("anthropic", SECRET)
    assert not (tmp_path / "data" / "vault.key").exists()
    assert file_vault(tmp_path, env).get("anthropic", component="test") == SECRET
    with pytest.raises(VaultError) as info:
        file_vault(tmp_path).get("anthropic", component="test")  # no key anywhere
    assert "its key is missing" in one_line_error(info)


def test_a_systemd_credential_is_used_as_the_key(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "clawpen-vault-key").write_text(new_key())
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    vault = file_vault(tmp_path, env)
    vault.set("anthropic", SECRET)
    assert vault.describe()["key"] == str(credentials / "clawpen-vault-key")
    assert not (tmp_path / "data" / "vault.key").exists()
    assert file_vault(tmp_path, env).get("anthropic", component="test") == SECRET


def test_the_wrong_key_fails_cleanly_in_one_line(tmp_path: Path) -> None:
    file_vault(tmp_path, {KEY_ENV: new_key()}).set("anthropic", SECRET)
    with pytest.raises(VaultError) as info:
        file_vault(tmp_path, {KEY_ENV: new_key()}).get("anthropic", component="test")
    message = one_line_error(info)
    assert "cannot be decrypted with the key from CLAWPEN_VAULT_KEY" in message
    assert "use the key it was written with" in message


def test_a_malformed_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(VaultError) as info:
        file_vault(tmp_path, {KEY_ENV: "short"}).set("anthropic", SECRET)
    assert "CLAWPEN_VAULT_KEY: not a vault key" in one_line_error(info)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
        pytest.param(lambda raw: b"not json at all", id="garbage"),
        pytest.param(
            lambda raw: raw.replace(b'"data": "', b'"data": "AAAA'),
            id="ciphertext_altered",
        ),
    ],
)
def test_a_corrupted_vault_file_fails_cleanly(tmp_path: Path, damage: object) -> None:
    vault = file_vault(tmp_path)
    vault.set("anthropic", SECRET)
    path = tmp_path / "data" / "vault.enc"
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(VaultError) as info:
        file_vault(tmp_path).get("anthropic", component="test")
    message = one_line_error(info)
    assert "vault.enc" in message
    assert SECRET not in message


def test_a_missing_secret_names_the_command_that_stores_it(tmp_path: Path) -> None:
    with pytest.raises(VaultError) as info:
        file_vault(tmp_path).get("anthropic", component="test")
    assert "clawpen secrets set anthropic" in one_line_error(info)


def test_a_rotated_secret_is_seen_by_a_ref_without_reopening(tmp_path: Path) -> None:
    holder = file_vault(tmp_path)
    file_vault(tmp_path).set("anthropic", "sk-ant-first-value")
    key = holder.ref("anthropic", component="proxy")
    assert key() == "sk-ant-first-value"
    file_vault(tmp_path).set("anthropic", "sk-ant-second-value")  # another process: the CLI
    assert key() == "sk-ant-second-value"


def test_every_read_is_logged_by_name_never_by_value(
    tmp_path: Path, log_events: list[dict[str, object]]
) -> None:
    vault = file_vault(tmp_path)
    vault.set("anthropic", SECRET)
    key = vault.ref("anthropic", component="proxy")
    key()
    key()  # nothing changed: no second read
    vault.get("anthropic", component="cli")
    reads = [e for e in log_events if e["event"] == "credential_accessed"]
    assert [(e["component"], e["name"]) for e in reads] == [
        ("proxy", "anthropic"),
        ("cli", "anthropic"),
    ]
    assert all(SECRET not in repr(e) for e in log_events)


# -- the keychain -----------------------------------------------------------------------------


class MemoryKeyring(KeyringBase):
    """A keychain that answers (a real keyring backend class, kept in a dict)."""

    priority = -1  # type: ignore[assignment]  # never picked on its own: only when set

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.items[(service, username)]


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(before)


@pytest.mark.parametrize("nothing", [fail.Keyring, null.Keyring], ids=["fail", "null"])
def test_headless_machine_has_no_keychain_so_auto_picks_the_file(
    tmp_path: Path, nothing: type[KeyringBase]
) -> None:
    before = keyring.get_keyring()
    keyring.set_keyring(nothing())  # what keyring finds without a Secret Service or Keychain
    try:
        assert not keyring_available()
        assert open_vault(tmp_path, "auto", env={}).backend.name == "file"
        with pytest.raises(VaultError) as info:
            open_vault(tmp_path, "keyring", env={})
    finally:
        keyring.set_keyring(before)
    assert "use vault.backend: file" in one_line_error(info)


def test_keychain_is_used_when_one_answers(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    vault = open_vault(tmp_path, "auto", env={})
    assert isinstance(vault.backend, KeyringBackend)
    vault.set("anthropic", SECRET)
    vault.set("slack", "xoxb-slack-token")
    assert vault.get("anthropic", component="test") == SECRET
    assert vault.list() == ["anthropic", "slack"]
    assert vault.delete("slack") and vault.list() == ["anthropic"]
    assert ("clawpen:" + str(tmp_path), "anthropic") in memory_keyring.items


def test_auto_keeps_an_existing_vault_file_even_when_a_keychain_appears(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    FileBackend(tmp_path / "vault.enc", tmp_path / "vault.key", {}).set("anthropic", SECRET)
    assert open_vault(tmp_path, "auto", env={}).backend.name == "file"


# -- secret: references in the config ---------------------------------------------------------

CONFIG = """\
data_dir: ./data
model:
  name: claude-test
  api_key: secret:anthropic
agents:
  - id: assistant
channels:
  cli: {}
  telegram:
    token: secret:telegram-bot
"""


def test_secret_references_resolve_from_the_vault(tmp_path: Path) -> None:
    vault = file_vault(tmp_path)
    vault.set("anthropic", SECRET)
    vault.set("telegram-bot", "123:tg-token-from-vault")
    (tmp_path / "clawpen.yaml").write_text(CONFIG)
    settings = load_settings(tmp_path / "clawpen.yaml", {})
    assert settings.model.api_key == SECRET
    assert settings.channels.telegram.token == "123:tg-token-from-vault"
    assert settings.secret_name("model.api_key") == "anthropic"


def test_a_missing_secret_is_one_clear_config_error(tmp_path: Path) -> None:
    file_vault(tmp_path).set("anthropic", SECRET)
    (tmp_path / "clawpen.yaml").write_text(CONFIG)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "clawpen.yaml", {})
    message = one_line_error(info)  # type: ignore[arg-type]
    assert "no secret 'telegram-bot' in the vault" in message
    assert "clawpen secrets set telegram-bot" in message


def test_a_config_without_secret_references_never_makes_a_vault(tmp_path: Path) -> None:
    config = CONFIG.replace("secret:anthropic", "env:KEY").replace("secret:telegram-bot", "1:t")
    (tmp_path / "clawpen.yaml").write_text(config)
    load_settings(tmp_path / "clawpen.yaml", {"KEY": "sk-ant-from-env"})
    assert not (tmp_path / "data" / "vault.key").exists()
