"""`clawpen approvals` against a live orchestrator, as a separate process: a pending request is
listed, allowed from the shell (the card then shows who decided), and the history shows it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from clawpen.app import Orchestrator
from tests.conftest import running, settled
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from .test_live_commands import clawpen, cli_config


async def test_a_request_is_listed_allowed_from_the_shell_and_kept_in_the_history(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    tmp_path: Path,
) -> None:
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        agents=[{"id": "assistant", "approvals": {"ask": ["send_message"], "timeout": "10m"}}],
        pairings=[
            {"channel": "telegram:1001", "agent": "assistant"},
            {"channel": "telegram:2002", "agent": "assistant"},
        ],
    )
    config = cli_config(tmp_path)
    async with running(orchestrator):
        text = json.dumps({"to": "telegram:2002", "text": "hi bob"})
        await fake_telegram.push_text(1001, f"tool: send_message {text}")
        await until(lambda: orchestrator.store.approvals(), what="a pending request")
        code, listed, err = await clawpen("approvals", "list", "--config", config)
        assert code == 0, err
        approval_id = listed.split("\t")[0]
        code, allowed, err = await clawpen("approvals", "allow", approval_id, "--config", config)
        assert code == 0, err
        await until(lambda: fake_telegram.texts_to(2002), what="the message to bob")
        await settled(orchestrator)
        code, _, err = await clawpen("approvals", "deny", approval_id, "--config", config)
        assert code != 0
        code, history, _ = await clawpen("approvals", "list", "--all", "--config", config)
        _, nothing, _ = await clawpen("approvals", "--config", config)
    assert "assistant\tsend_message\tsend to telegram:2002:\tpending" in listed
    assert "allowed by cli (cli)" in allowed
    assert "already" in err
    assert f"{approval_id}\tassistant\tsend_message" in history and "allowed by cli" in history
    assert nothing.strip() == "nothing waits for a decision"
    assert fake_telegram.texts_to(2002) == ["hi bob"]
    card = next(m for m in fake_telegram.sent if m["text"].startswith("Approval needed"))
    assert card["text"].endswith("Allowed by cli.")  # the card in the chat shows it too


async def test_clawpen_chat_shows_the_card_and_the_answer_after_the_decision(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
    tmp_path: Path,
) -> None:
    """The task came from `clawpen chat`, so its session is the approver: the card is shown
    there, "y" allows it, and the agent's answer follows."""
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        agents=[{"id": "assistant", "approvals": {"ask": ["send_message"]}}],
        pairings=[{"channel": "telegram:2002", "agent": "assistant"}],
    )
    text = json.dumps({"to": "telegram:2002", "text": "hi from the terminal"})
    async with running(orchestrator):
        code, out, err = await clawpen(
            "chat",
            "--config",
            cli_config(tmp_path),
            stdin=f"tool: send_message {text}\ny\n".encode(),
        )
        await settled(orchestrator)
    assert code == 0, err
    assert "assistant> Approval needed: assistant (for cli:assistant) wants to send" in out
    assert "To Allow, reply with: ok-" in out
    assert "assistant> Allowed." in out and "Allowed by cli:assistant." in out
    assert out.rstrip().endswith("sent to telegram:2002")
    assert fake_telegram.texts_to(2002) == ["hi from the terminal"]
