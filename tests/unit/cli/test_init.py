"""`clawpen init` (what the quick start calls): the config it writes works from a plain shell,
keeps tokens in the vault, is owner-only, and a second run adds what the environment now
offers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from clawpen.cli.init import DEMO_MODEL_URL, plan


def test_a_fresh_config_writes_urls_out_and_names_tokens_in_the_vault() -> None:
    env = {
        "ANTHROPIC_BASE_URL": "https://llm.example.com",
        "TELEGRAM_BOT_TOKEN": "123:tg-secret",
        "TELEGRAM_CHAT_ID": "4242",
    }
    todo = plan(None, env)
    assert todo.config is not None
    assert todo.config["model"]["base_url"] == "https://llm.example.com"
    assert todo.config["model"]["api_key"] == "secret:anthropic-api-key"
    assert todo.config["channels"]["telegram"] == {"token": "secret:telegram-bot-token"}
    assert todo.config["pairings"] == [{"channel": "telegram:4242", "agent": "assistant"}]
    assert todo.secrets == {"telegram-bot-token": "123:tg-secret"}
    assert "tg-secret" not in yaml.safe_dump(todo.config)
    assert "env:" not in yaml.safe_dump(todo.config)


def test_a_second_run_adds_a_channel_and_keeps_the_rest() -> None:
    first = plan(None, {}).config
    assert first is not None and "telegram" not in first["channels"]
    first["agents"][0]["system_prompt"] = "Edited by hand."
    second = plan(first, {"TELEGRAM_BOT_TOKEN": "123:tg", "TELEGRAM_CHAT_ID": "7"})
    assert second.config is not None
    assert second.config["channels"]["telegram"] == {"token": "secret:telegram-bot-token"}
    assert second.config["agents"][0]["system_prompt"] == "Edited by hand."
    assert any("added the telegram channel" in note for note in second.notes)
    assert any("paired telegram:7" in note for note in second.notes)
    # a third run with the same environment changes nothing in the file, refreshes the vault
    third = plan(second.config, {"TELEGRAM_BOT_TOKEN": "123:new", "TELEGRAM_CHAT_ID": "7"})
    assert third.config is None
    assert third.secrets == {"telegram-bot-token": "123:new"}


def test_half_a_channel_is_not_added_and_says_what_is_missing() -> None:
    todo = plan(None, {"SLACK_BOT_TOKEN": "xoxb-1"})
    assert todo.config is not None and "slack" not in todo.config["channels"]
    assert any("set SLACK_APP_TOKEN too" in note for note in todo.notes)


def test_a_channel_written_by_hand_is_left_as_written() -> None:
    existing = plan(None, {}).config
    assert existing is not None
    existing["channels"]["discord"] = {"token": "env:DISCORD_BOT_TOKEN"}
    todo = plan(existing, {"DISCORD_BOT_TOKEN": "abc"})
    assert todo.config is None and todo.secrets == {}
    assert any("channels.discord.token left as written" in note for note in todo.notes)


def test_the_demo_url_comes_and_goes_and_old_env_urls_are_replaced() -> None:
    demo = plan(None, {}, demo=True).config
    assert demo is not None and demo["model"]["base_url"] == DEMO_MODEL_URL
    real = plan(demo, {}).config  # a key now: back to Anthropic
    assert real is not None and real["model"]["base_url"] == "https://api.anthropic.com"
    old = {**real, "model": {**real["model"], "base_url": "env:ANTHROPIC_BASE_URL"}}
    fixed = plan(old, {}).config
    assert fixed is not None and fixed["model"]["base_url"] == "https://api.anthropic.com"
    custom = {**real, "model": {**real["model"], "base_url": "https://proxy.internal"}}
    assert plan(custom, {}).config is None  # a URL set by hand stays


def clawpen(
    args: list[str], env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clawpen", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_written_config_passes_check_from_a_plain_shell(tmp_path: Path) -> None:
    plain = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    config = tmp_path / "clawpen.yaml"
    offered = {
        **plain,
        "ANTHROPIC_BASE_URL": "https://llm.example.com",
        "TELEGRAM_BOT_TOKEN": "123:tg-secret",
        "TELEGRAM_CHAT_ID": "4242",
    }
    done = clawpen(["init", "--config", str(config)], offered)
    assert done.returncode == 0, done.stderr
    assert "{" not in done.stderr  # no raw JSON log line on the terminal (credential_stored)
    stored = clawpen(
        ["secrets", "set", "anthropic-api-key", "--config", str(config)], plain, "sk-ant-x"
    )
    assert stored.returncode == 0, stored.stderr
    assert "tg-secret" not in config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "clawpen-data").stat().st_mode & 0o777 == 0o700

    checked = clawpen(["check", "--config", str(config)], plain)  # no variable set at all
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""  # its vault reads are in the log file, not on the terminal
    assert "channels cli, telegram" in checked.stdout

    again = {**plain, "DISCORD_BOT_TOKEN": "discord-secret"}
    done = clawpen(["init", "--config", str(config)], again)
    assert done.returncode == 0, done.stderr
    assert "added the discord channel" in done.stderr
    assert (tmp_path / "clawpen.yaml.bak").stat().st_mode & 0o777 == 0o600
    checked = clawpen(["check", "--config", str(config)], plain)
    assert checked.returncode == 0, checked.stderr
    assert "channels cli, discord, telegram" in checked.stdout
    revealed = clawpen(
        ["secrets", "get", "discord-bot-token", "--reveal", "--config", str(config)], plain
    )
    assert revealed.stdout.strip() == "discord-secret"
