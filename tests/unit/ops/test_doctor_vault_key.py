"""`clawpen doctor` says when the file vault's key lies beside the vault (issue 23): a copy of
the data dir then carries both the lock and its key."""

from __future__ import annotations

from pathlib import Path

from clawpen.config import Settings
from clawpen.ops.doctor import vault_key
from clawpen.security.vault import KEY_ENV, new_key, open_vault


def settings(data_dir: Path, **vault: object) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": str(data_dir),
            "model": {"name": "claude-test", "api_key": "sk-test"},
            "agents": [{"id": "assistant"}],
            "vault": {"backend": "file", **vault},
        }
    )


def test_doctor_warns_when_the_vault_key_sits_next_to_the_vault(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    open_vault(data_dir, "file", env={}).set("anthropic-api-key", "sk-ant-x")  # the default key
    [check] = vault_key(settings(data_dir), {})
    assert check.verdict == "warn"
    assert str(data_dir / "vault.key") in check.detail and "vault.enc" in check.detail
    for way in (KEY_ENV, "clawpen-vault-key", "clawpen service install", "vault.key_file"):
        assert way in check.fix
    assert "keychain" in check.fix


def test_doctor_is_content_with_a_key_from_the_environment(tmp_path: Path) -> None:
    env = {KEY_ENV: new_key()}
    open_vault(tmp_path, "file", env=env).set("anthropic-api-key", "sk-ant-x")
    [check] = vault_key(settings(tmp_path), env)
    assert check.verdict == "ok" and KEY_ENV in check.detail
    assert not (tmp_path / "vault.key").exists()


def test_doctor_says_nothing_of_a_vault_that_does_not_exist(tmp_path: Path) -> None:
    assert vault_key(settings(tmp_path), {}) == []
