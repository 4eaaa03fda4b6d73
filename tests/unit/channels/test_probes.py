"""`clawpen doctor` asks every configured platform whether it takes the token, against the
fakes that speak each platform's API: a good token passes, a refused one fails with its fix,
a platform that does not answer says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clawpen.channels.discord import DiscordSettings
from clawpen.channels.discord.probe import probe as discord
from clawpen.channels.slack import SlackSettings
from clawpen.channels.slack.probe import probe as slack
from clawpen.channels.whatsapp import WhatsAppSettings
from clawpen.channels.whatsapp.probe import probe as whatsapp
from clawpen.ops.doctor import run_checks
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.fake_whatsapp import FakeWhatsApp

NOBODY = "http://127.0.0.1:9"  # discard port: nothing listens


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def fake_whatsapp() -> AsyncIterator[FakeWhatsApp]:
    fake = FakeWhatsApp()
    await fake.start()
    yield fake
    await fake.close()


async def test_slack_checks_both_tokens(fake_slack: FakeSlack) -> None:
    async def probe(bot: str, app: str, url: str = fake_slack.url) -> tuple[str, str] | None:
        return await slack(SlackSettings(bot_token=bot, app_token=app, api_base_url=url))

    assert await probe(fake_slack.bot_token, fake_slack.app_token) is None
    bad_bot = await probe("xoxb-wrong", fake_slack.app_token)
    assert bad_bot is not None and "bot_token (invalid_auth)" in bad_bot[0]
    bad_app = await probe(fake_slack.bot_token, fake_slack.bot_token)
    assert bad_app is not None and "app_token (not_allowed_token_type)" in bad_app[0]
    assert "xapp-" in bad_app[1]
    away = await probe(fake_slack.bot_token, fake_slack.app_token, NOBODY)
    assert away is not None and "does not answer" in away[0]
    assert "chat.postMessage" not in fake_slack.calls  # a probe sends nothing


async def test_discord_checks_the_bot_token(fake_discord: FakeDiscord) -> None:
    async def probe(token: str, url: str = fake_discord.api_base_url) -> tuple[str, str] | None:
        return await discord(DiscordSettings(token=token, api_base_url=url))

    assert await probe(fake_discord.token) is None
    assert "GET /users/@me" in fake_discord.calls
    refused = await probe("wrong")
    assert refused is not None and refused[0] == "Discord refused the bot token"
    assert "Reset Token" in refused[1]
    away = await probe(fake_discord.token, NOBODY)
    assert away is not None and "does not answer" in away[0]


async def test_whatsapp_checks_the_token_and_the_number(fake_whatsapp: FakeWhatsApp) -> None:
    async def probe(**changes: str) -> tuple[str, str] | None:
        return await whatsapp(
            WhatsAppSettings.model_validate({**fake_whatsapp.settings(), **changes})
        )

    assert await probe() is None
    expired = await probe(access_token="EAAGexpired")
    assert expired is not None and "access_token" in expired[0]
    unknown = await probe(phone_number_id="999")
    assert unknown is not None and "phone number id 999" in unknown[0]
    assert "API Setup" in unknown[1]
    away = await probe(api_base_url=NOBODY)
    assert away is not None and "does not answer" in away[0]


async def test_doctor_reports_each_channel_by_name(
    tmp_path: Path,
    fake_slack: FakeSlack,
    fake_discord: FakeDiscord,
    fake_whatsapp: FakeWhatsApp,
    fake_telegram: FakeTelegram,
) -> None:
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        "data_dir: ./data\n"
        "docker_host: unix:///nonexistent/docker.sock\n"
        f"model:\n  base_url: {NOBODY}\n  api_key: env:KEY\n"
        "agents:\n  - id: assistant\n"
        "channels:\n"
        f"  telegram: {{token: 'env:TG', api_base_url: '{fake_telegram.url}'}}\n"
        f"  slack: {{bot_token: xoxb-revoked, app_token: env:SLACK_APP,"
        f" api_base_url: '{fake_slack.url}'}}\n"
        f"  discord: {{token: env:DISCORD, api_base_url: '{fake_discord.api_base_url}'}}\n"
        f"  whatsapp: {{phone_number_id: '{fake_whatsapp.phone_number_id}',"
        " access_token: env:WA, app_secret: env:WA, verify_token: env:WA,"
        f" api_base_url: '{fake_whatsapp.url}'}}\n"
    )
    config.chmod(0o600)
    env = {
        "KEY": "k",
        "TG": fake_telegram.token,
        "SLACK_APP": fake_slack.app_token,
        "DISCORD": "not-the-token",
        "WA": fake_whatsapp.access_token,
    }
    checks = {c.name: c for c in await asyncio.to_thread(run_checks, config, env)}
    assert checks["channel telegram"].verdict == "ok"
    assert checks["channel whatsapp"].verdict == "ok"
    assert checks["channel slack"].verdict == "fail"
    assert "bot_token" in checks["channel slack"].detail
    assert checks["channel discord"].verdict == "fail"
    assert "Reset Token" in checks["channel discord"].fix
