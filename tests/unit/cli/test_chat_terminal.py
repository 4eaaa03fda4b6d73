"""`clawpen chat` in a real pseudo-terminal, against an orchestrator in this process: a long
multi-line paste arrives whole, and a reply's escape sequences are shown, not obeyed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from clawpen.app import Orchestrator
from clawpen.cli.chatui import inert
from clawpen_agent.protocol import Task, TaskResult
from tests.fakes.fake_runtime import FakeRuntime

from ...conftest import running

ATTACK = "\x1b[2J\x1b[H\x1b]0;pwned\x07owned\rX"


def answer(task: Task) -> TaskResult:
    text = task.lines[-1].text
    if text == "attack":
        return TaskResult(text=ATTACK)
    return TaskResult(
        text=f"got {len(text)} chars, {text.count(chr(10))} newlines, ends {text[-6:]}"
    )


def spawn_chat(config: Path) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "clawpen", "chat", "--config", str(config)],
        env={
            **os.environ,
            "TERM": "xterm",
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "COLUMNS": "120",
            "LINES": "40",
        },
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 120),
    )


def write_cli_config(tmp_path: Path) -> Path:
    config = tmp_path / "clawpen.yaml"
    config.write_text("data_dir: ./data\nagents:\n  - id: assistant\n")
    return config


async def test_a_long_multiline_paste_arrives_whole(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator = orchestrator_factory(FakeRuntime(answer))
    paste = "\n".join(f"line {i:03d} " + "x" * 90 for i in range(100)) + " THE-END"
    assert len(paste) >= 10_000

    def converse() -> None:
        chat = spawn_chat(write_cli_config(tmp_path))
        try:
            chat.expect("you>")
            chat.send("\x1b[200~" + paste + "\x1b[201~")  # a bracketed paste, as terminals send
            chat.send("\r")
            chat.expect(r"assistant> got (\d+) chars, (\d+) newlines, ends (\S+)", timeout=60)
            assert chat.match.groups() == (str(len(paste)), "99", "HE-END")
            chat.expect("you>")  # the prompt is back: Ctrl-D now ends the chat
            chat.sendeof()
            chat.expect(pexpect.EOF)
        finally:
            chat.close(force=True)

    async with running(orchestrator):
        await asyncio.to_thread(converse)


async def test_escape_sequences_in_a_reply_are_shown_inert(
    orchestrator_factory: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    orchestrator = orchestrator_factory(FakeRuntime(answer))

    def converse() -> str:
        chat = spawn_chat(write_cli_config(tmp_path))
        try:
            chat.expect("you>")
            chat.send("attack\r")
            chat.expect("assistant> ")
            chat.expect("you>")
            shown = str(chat.before)
            chat.sendeof()
            chat.expect(pexpect.EOF)
            return shown
        finally:
            chat.close(force=True)

    async with running(orchestrator):
        shown = await asyncio.to_thread(converse)
    assert inert(ATTACK) in shown  # visible as ^[[2J...
    assert "\x1b]0;pwned" not in shown and "\x1b[2J" not in shown


def test_inert_keeps_text_and_layout_but_no_control() -> None:
    assert inert("héllo\n\tworld") == "héllo\n\tworld"
    assert inert("\x1b[31mred\x1b[0m") == "^[[31mred^[[0m"
    assert inert("a\rb\x07\x9b") == "a^Mb^G<U+009B>"


async def test_chat_without_an_orchestrator_fails_before_the_first_message(
    tmp_path: Path,
) -> None:
    def converse() -> tuple[str, int]:
        chat = spawn_chat(write_cli_config(tmp_path))
        chat.expect(pexpect.EOF)
        chat.close()
        return str(chat.before), int(chat.exitstatus or 0)

    shown, code = await asyncio.to_thread(converse)
    assert code != 0
    assert "no orchestrator answers" in shown and "you>" not in shown


def test_ctrl_c_during_an_answer_stops_it_and_a_second_ctrl_c_leaves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The interactive chat and the piped one share ``answer``: the first Ctrl-C sends
    ``/stop`` for this conversation and shows what the stopped work says; the second one,
    while that is awaited, leaves."""
    from clawpen.cli.chatui import answer

    asked: list[str] = []

    def interrupted_once(text: str) -> str:
        asked.append(text)
        if len(asked) == 1:
            raise KeyboardInterrupt
        return "Stopped."

    assert answer(interrupted_once, "run: sleep 600") == "Stopped."
    assert asked == ["run: sleep 600", "/stop"]
    assert "stopping the answer, as /stop does; Ctrl-C again leaves" in capsys.readouterr().err

    def always_interrupted(text: str) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        answer(always_interrupted, "run: sleep 600")
