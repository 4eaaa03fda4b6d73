"""clawpen.yaml: the documented minimal config loads; every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawpen.config import data_dir_of, load_settings
from clawpen.errors import ConfigError

MINIMAL = """\
data_dir: ./clawpen-data
model:
  name: claude-sonnet-4-5
  base_url: https://api.anthropic.com   # upstream of the model proxy
  api_key: env:ANTHROPIC_API_KEY        # env:VAR now; secret:NAME once the vault exists
agents:
  - id: assistant
    system_prompt: You are a helpful assistant.
channels:
  cli: {}
  telegram:
    token: env:TELEGRAM_BOT_TOKEN
    api_base_url: https://api.telegram.org
pairings:
  - channel: telegram:123456789
    agent: assistant
"""

ENV = {"ANTHROPIC_API_KEY": "sk-ant-real", "TELEGRAM_BOT_TOKEN": "123:tg-token"}


def write(tmp_path: Path, text: str, name: str = "clawpen.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, ENV if env is None else env)
    message = str(info.value)
    assert "\n" not in message, f"error spans several lines: {message!r}"
    return message


def test_minimal_config_is_accepted_as_written(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), ENV)
    assert settings.model.name == "claude-sonnet-4-5"
    assert settings.model.base_url == "https://api.anthropic.com"
    assert settings.model.api_key == "sk-ant-real"
    assert [a.id for a in settings.agents] == ["assistant"]
    assert settings.agent("assistant").system_prompt == "You are a helpful assistant."
    assert settings.channels.cli is not None
    assert settings.channels.telegram is not None
    assert settings.channels.telegram.token == "123:tg-token"
    assert settings.channels.telegram.api_base_url == "https://api.telegram.org"
    assert [(p.channel, p.agent) for p in settings.pairings] == [
        ("telegram:123456789", "assistant")
    ]


def test_data_dir_is_relative_to_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(config_dir, MINIMAL)
    settings = load_settings(path, ENV)
    assert settings.data_dir == (config_dir / "clawpen-data").resolve()
    assert data_dir_of(path) == settings.data_dir


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "somewhere" / "data"
    path = write(tmp_path, MINIMAL.replace("./clawpen-data", str(target)))
    assert load_settings(path, ENV).data_dir == target


def test_secrets_do_not_appear_in_repr(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), ENV)
    assert "sk-ant-real" not in repr(settings)
    assert "tg-token" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"ANTHROPIC_API_KEY": "k"},
            "channels.telegram.token: TELEGRAM_BOT_TOKEN is not set",
            id="missing_telegram_token",
        ),
        pytest.param(
            {"ANTHROPIC_API_KEY": "k", "TELEGRAM_BOT_TOKEN": ""},
            "channels.telegram.token: TELEGRAM_BOT_TOKEN is not set",
            id="empty_telegram_token",
        ),
        pytest.param(
            {"TELEGRAM_BOT_TOKEN": "t"},
            "model.api_key: ANTHROPIC_API_KEY is not set",
            id="missing_api_key",
        ),
    ],
)
def test_unset_env_var_names_file_key_and_fix(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, MINIMAL)
    message = config_error(path, env)
    assert message.startswith(f"{path}: {expected}")
    assert "export" in message


# Each row: a change to the minimal config, and what the one-line error must contain.
BAD_CONFIGS = [
    pytest.param(MINIMAL + "colour: blue\n", ["colour", "unknown key"], id="unknown_top_level_key"),
    pytest.param(
        MINIMAL.replace("    system_prompt:", "    sytem_prompt:"),
        ["agents.0.sytem_prompt: unknown key; did you mean system_prompt?"],
        id="misspelt_key_suggests_the_right_one",
    ),
    pytest.param(
        MINIMAL + "log_level: loud\n",
        ["log_level: 'loud' must be one of debug, info, warning, error"],
        id="rule_in_words_not_a_regex",
    ),
    pytest.param(
        MINIMAL.replace("  name: claude", "  nmae: claude"),
        ["model.nmae", "unknown key"],
        id="misspelt_nested_key",
    ),
    pytest.param(
        MINIMAL.replace("  api_key: env:ANTHROPIC_API_KEY", ""),
        ["model.api_key", "required key is missing"],
        id="missing_required_api_key",
    ),
    pytest.param(
        MINIMAL.replace("agents:\n", "agents:\n  - id: assistant\n"),
        ["agents", "duplicate id 'assistant'"],
        id="duplicate_agent_id",
    ),
    pytest.param(
        MINIMAL + "  - channel: telegram:42\n    agent: nobody\n",
        ["pairings.1.agent", "no agent 'nobody'", "known agents: assistant"],
        id="pairing_to_unknown_agent",
    ),
    pytest.param(
        MINIMAL.replace(
            "  telegram:\n    token: env:TELEGRAM_BOT_TOKEN\n", "  telegram:\n"
        ).replace("  telegram:\n    api_base_url: https://api.telegram.org\n", ""),
        ["pairings.0.channel", "'telegram' is not configured", "add it under channels:"],
        id="pairing_on_unconfigured_channel",
    ),
    pytest.param(
        MINIMAL + "  - channel: fax:42\n    agent: assistant\n",
        ["pairings.1.channel", "'fax' is not a chat platform", "use one of: ", "slack", "telegram"],
        id="pairing_on_unknown_platform",
    ),
    pytest.param(
        MINIMAL + "  - channel: telegram:@alice\n    agent: assistant\n",
        ["pairings.1.channel", "'@alice' is not a telegram chat id", "telegram:123456789"],
        id="pairing_with_a_malformed_chat_id",
    ),
    pytest.param(
        MINIMAL + "  - channel: telegram\n    agent: assistant\n",
        ["pairings.1.channel", "PLATFORM:CHAT_ID"],
        id="pairing_without_a_chat",
    ),
    pytest.param(
        MINIMAL.replace("  - id: assistant", "  - id: My Assistant").replace(
            "agent: assistant", "agent: My Assistant"
        ),
        ["agents.0.id", "'My Assistant' must be 1 to 40 lowercase letters, digits"],
        id="bad_agent_id",
    ),
    pytest.param(
        MINIMAL.replace("base_url: https://api.anthropic.com", "base_url: api.anthropic.com"),
        ["model.base_url", "'api.anthropic.com' is not an http(s) URL"],
        id="base_url_without_scheme",
    ),
    pytest.param(
        MINIMAL.replace("base_url: https://api.anthropic.com", "base_url: ftp://example.com"),
        ["model.base_url", "not an http(s) URL"],
        id="base_url_wrong_scheme",
    ),
    pytest.param(
        MINIMAL.replace("api_key: env:ANTHROPIC_API_KEY", "api_key: secret:anthropic"),
        ["model.api_key: no secret 'anthropic' in the vault", "clawpen secrets set anthropic"],
        id="secret_reference_missing",
    ),
    pytest.param("- just\n- a list\n", ["expected a mapping"], id="not_a_mapping"),
    pytest.param("", ["expected a mapping"], id="empty_file"),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_CONFIGS)
def test_bad_config_is_one_line_naming_file_key_and_fix(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    assert "; " in message, f"no fix given: {message!r}"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("model:\n  name: [x\n  api_key: y\n", "line 3, column 10", id="open_list"),
        pytest.param("model:\n  name: x\n   api_key: y\n", "line 3, column 11", id="bad_indent"),
        pytest.param("model:\n\tname: x\n", "line 2, column 1", id="tab_indent"),
    ],
)
def test_malformed_yaml_names_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert where in message
    assert "fix the YAML syntax" in message


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert message == (f"{path}: no such config file; create it (see README) or pass --config PATH")


def test_config_error_carries_problem_and_fix_separately(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, MINIMAL), {"ANTHROPIC_API_KEY": "k"})
    assert info.value.problem.endswith("TELEGRAM_BOT_TOKEN is not set")
    assert info.value.fix.startswith("export TELEGRAM_BOT_TOKEN=")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("kind", ["directory", "not_utf8"])
def test_unreadable_config_is_a_config_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "clawpen.yaml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"model: {api_key: \xff}\n")
    config_error(path)


def test_base_url_with_spaces_is_rejected(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "base_url: https://api.anthropic.com", "base_url: 'https://api.anthropic.com oops'"
    )
    config_error(write(tmp_path, text))


JOBS = """\
jobs:
  - name: daily-report
    agent: assistant
    schedule: "0 9 * * *"            # cron; or `every: 15m`; or `at: 2026-12-01T09:00`
    timezone: Europe/Berlin          # IANA zone; default UTC
    task: Generate a summary of yesterday's messages
    deliver_to: telegram:123456789   # any paired address; the answer goes there
  - name: often
    agent: assistant
    every: 15m
    task: check
    deliver_to: telegram:123456789
  - name: once
    agent: assistant
    at: 2026-12-01T09:00
    task: remind
    deliver_to: telegram:123456789
"""


def test_jobs_are_accepted_as_the_issue_writes_them(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + JOBS), ENV)
    specs = [job.spec() for job in settings.jobs]
    assert [(s.name, s.kind, s.spec, s.timezone) for s in specs] == [
        ("daily-report", "cron", "0 9 * * *", "Europe/Berlin"),
        ("often", "every", "900", "UTC"),
        ("once", "at", "2026-12-01T09:00", "UTC"),
    ]
    assert str(specs[0].deliver_to) == "telegram:123456789"
    assert specs[0].misfire == "run_once" and specs[0].max_failures == 5


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("agent: assistant", "agent: nobody", 1), "jobs.0.agent: no agent 'nobody'"),
        (("telegram:123456789   #", "slack:C1 #", 1), "jobs.0.deliver_to: channel 'slack'"),
        (('"0 9 * * *"', '"0 9 * *"', 1), "jobs.0.schedule: '0 9 * *' is not a cron"),
        (("Europe/Berlin", "Mars/Olympus", -1), "jobs.0.timezone: unknown time zone"),
        (("every: 15m\n", "every: soon\n", 1), "jobs.1.every: 'soon' is not an interval"),
        (("name: often", "name: daily-report", 1), "jobs.1.name: duplicate job"),
    ],
)
def test_a_bad_job_is_one_line_naming_its_key(
    tmp_path: Path, change: tuple[str, str, int], says: str
) -> None:
    old, new, count = change
    assert says in config_error(write(tmp_path, MINIMAL + JOBS.replace(old, new, count)))


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("    system_prompt:", "    sytem_prompt:")
        .replace("  name: claude", "  nmae: claude")
        .replace("data_dir:", "log_level: loud\ndata_dir:")
    )
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {"ANTHROPIC_API_KEY": "k"})
    message = str(info.value)
    assert "4 problems" in message
    for expected in (
        "agents.0.sytem_prompt: unknown key; did you mean system_prompt?",
        "model.nmae: unknown key; did you mean name?",
        "log_level: 'loud' must be one of",
        "channels.telegram.token: TELEGRAM_BOT_TOKEN is not set",
    ):
        assert expected in message
    assert len(message.splitlines()) == 5  # a heading and one line per problem


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        pytest.param("model:\n  name: a: b\n", "needs quotes", id="colon_in_value"),
        pytest.param("model:\n\tname: x\n", "indent with spaces only", id="tab"),
        pytest.param("model:\n  name: [x\n  api_key: y\n", "not closed with ']'", id="list"),
    ],
)
def test_yaml_syntax_errors_are_a_plain_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    message = config_error(write(tmp_path, text))
    assert "line " in message and "column " in message
    assert sentence in message


def test_every_bad_pairing_and_job_comes_in_one_run_each_fix_said_once(tmp_path: Path) -> None:
    """Four bad pairings took four runs of `clawpen check`; now they take one, and no line
    repeats the closing "fix them all in the file"."""
    pairings = "".join(
        f"  - channel: {chat}\n    agent: {agent}\n"
        for chat, agent in [
            ("telegram:42", "nobody"),
            ("telegram:not-a-chat", "assistant"),
            ("telegram:7", "ghost"),
            ("slack:C1", "assistant"),
        ]
    )
    text = MINIMAL + pairings + JOBS.replace("agent: assistant", "agent: nobody", 1)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), ENV)
    message = str(info.value)
    for expected in (
        "pairings.1.agent: no agent 'nobody'",
        "pairings.2.channel: ",
        "pairings.3.agent: no agent 'ghost'",
        "pairings.4.channel: ",
        "jobs.0.agent: no agent 'nobody'",
    ):
        assert expected in message, message
    assert "5 problems" in message
    assert message.count("fix") == 1 and message.endswith("; fix them all in the file")
