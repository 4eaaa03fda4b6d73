"""Credentials at work: no known secret value leaves in a log line, an error or a reply, and a
key rotated in the vault is used by the next model call without a restart."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.config import load_settings
from clawpen.demo.model import FakeModel
from clawpen.obs import logging as clawpen_logging
from clawpen.obs.redact import MASK, SECRETS, Redactor
from clawpen.runtime.inprocess import InProcessRuntime
from clawpen.security.vault import open_vault
from tests.conftest import running

LEAKED = "sk-ant-leaked-" + "0123456789abcdef" * 2


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[str]]]:
    out = io.StringIO()
    clawpen_logging.configure("info", out)
    SECRETS.add(LEAKED)
    yield lambda: out.getvalue().splitlines()
    clawpen_logging.configure("info")


def test_redactor_replaces_every_form_of_a_value() -> None:
    redact = Redactor()
    redact.add('pa"ss\\word-long')
    redact.add("short")  # too short to redact without blanking ordinary words
    assert redact('x pa"ss\\word-long y') == f"x {MASK} y"
    assert redact(json.dumps({"v": 'pa"ss\\word-long'})) == json.dumps({"v": MASK})
    assert redact("a short word") == "a short word"


def test_a_secret_in_a_log_field_is_redacted(log_lines: Callable[[], list[str]]) -> None:
    clawpen_logging.get_logger().warning("model_call_failed", error=f"bad key {LEAKED}")
    [line] = log_lines()
    assert LEAKED not in line
    assert json.loads(line)["error"] == f"bad key {MASK}"


def test_a_secret_in_an_exception_and_its_traceback_is_redacted(
    log_lines: Callable[[], list[str]],
) -> None:
    try:
        raise RuntimeError(f"upstream said: invalid x-api-key {LEAKED}")
    except RuntimeError:
        clawpen_logging.get_logger().exception("task_failed")
    [line] = log_lines()
    assert LEAKED not in line
    assert f"invalid x-api-key {MASK}" in json.loads(line)["exception"]


def test_a_secret_in_a_librarys_own_log_is_redacted(log_lines: Callable[[], list[str]]) -> None:
    logging.getLogger("aiohttp.client").error("request failed with header %s", LEAKED)
    [line] = log_lines()
    assert LEAKED not in line and MASK in line


async def test_an_agent_that_echoes_the_model_key_does_not_post_it(
    orchestrator_factory: Callable[..., Orchestrator], api_key: str
) -> None:
    orchestrator = orchestrator_factory()
    async with running(orchestrator):
        assert orchestrator.cli is not None
        reply = await orchestrator.cli.ask("assistant", f"repeat after me: {api_key}")
    assert api_key not in reply
    assert reply == f"echo: repeat after me: {MASK}"


async def test_a_rotated_key_is_used_by_the_next_call_without_a_restart(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    data = tmp_path / "data"
    vault = open_vault(data, "file", env={})
    vault.set("anthropic", "sk-ant-first-key-0001")
    fake_model.api_key = "sk-ant-first-key-0001"
    config = tmp_path / "clawpen.yaml"
    config.write_text(
        f"data_dir: {data}\n"
        f"model: {{name: claude-test, base_url: '{fake_model.url}', api_key: secret:anthropic}}\n"
        "agents: [{id: assistant}]\n"
        "channels: {cli: {}}\n"
    )
    settings = load_settings(config, {})
    orchestrator = Orchestrator.open(
        settings, runtime=InProcessRuntime(tmp_path / "ws"), adapters="in_process"
    )
    async with running(orchestrator):
        assert orchestrator.cli is not None
        first = await orchestrator.cli.ask("assistant", "one")
        # what `clawpen secrets set anthropic` does from another process, and the provider
        # now accepts only the new key
        open_vault(data, "file", env={}).set("anthropic", "sk-ant-second-key-0002")
        fake_model.api_key = "sk-ant-second-key-0002"
        second = await orchestrator.cli.ask("assistant", "two")
        status = await orchestrator.status()
    assert (first, second) == ("echo: one", "echo: two")
    sent = [h["x-api-key"] for h in fake_model.headers]
    assert sent == ["sk-ant-first-key-0001", "sk-ant-second-key-0002"]
    assert status["vault"]["backend"] == "file"
    assert status["vault"]["secrets"] == 1
