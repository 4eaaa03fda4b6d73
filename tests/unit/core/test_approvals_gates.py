"""The other gates: a job the agent makes or cancels waits for the tap, a web_fetch is asked
about (and fetched) in its canonical form, a card's code typed back as a message is a tap of
its sender, and a read-write mount under ``ask: [mounts]`` is staged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clawpen.app import Orchestrator
from clawpen.config import Settings
from clawpen.runtime.pool import agent_spec
from clawpen.tools.web import canonical_url
from tests.conftest import running, settled
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

from .test_approvals import OWNER, PAIRINGS, agent, button, cards, first_card


async def test_a_job_the_agent_makes_waits_for_the_tap_and_a_denied_one_is_not_made(
    orchestrator_factory: Callable[..., Orchestrator], fake_telegram: FakeTelegram
) -> None:
    orchestrator = orchestrator_factory(
        telegram=fake_telegram, agents=[agent(ask=["jobs"])], pairings=PAIRINGS
    )
    job = {"name": "daily", "task": "say hi", "every": "1h"}
    async with running(orchestrator):
        await fake_telegram.push_text(OWNER, "tool: schedule_job " + json.dumps(job))
        card = await first_card(fake_telegram)
        assert "schedule job 'daily'" in card["text"] and "say hi" in card["text"]
        assert await orchestrator.scheduler.jobs("assistant") == []
        deny = await fake_telegram.push_tap(OWNER, card["message_id"], button(card, "Deny"), OWNER)
        await fake_telegram.wait_for_answer(deny)
        await settled(orchestrator)
        assert await orchestrator.scheduler.jobs("assistant") == []
        await fake_telegram.push_text(OWNER, "tool: schedule_job " + json.dumps(job))
        await until(lambda: len(cards(fake_telegram)) == 2, what="a second card")
        second = cards(fake_telegram)[1]
        allow = await fake_telegram.push_tap(
            OWNER, second["message_id"], button(second, "Allow"), OWNER
        )
        await fake_telegram.wait_for_answer(allow)
        await settled(orchestrator)
        jobs = await orchestrator.scheduler.jobs("assistant")
    assert "create job denied by telegram:1001; nothing changed" in fake_telegram.texts_to(OWNER)[1]
    assert [j.name for j in jobs] == ["daily"]


async def test_a_code_typed_back_is_the_tap_of_who_typed_it(
    orchestrator_factory: Callable[..., Orchestrator], fake_telegram: FakeTelegram
) -> None:
    """The fallback of platforms without buttons: the code as a whole message, from the
    approver, in the card's chat; from anyone else it changes nothing."""
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        agents=[agent(ask=["send_message"])],
        pairings=[*PAIRINGS, {"channel": "telegram:-500", "agent": "assistant"}],
    )
    async with running(orchestrator):
        await fake_telegram.push_text(
            OWNER, "tool: send_message " + json.dumps({"to": "telegram:-500", "text": "hey group"})
        )
        card = await first_card(fake_telegram)
        code = button(card, "Allow")
        await fake_telegram.push_text(-500, code, user_id=OWNER)  # another chat: just a message
        # as a phone's keyboard types it: first letter capitalised, spaces around
        await fake_telegram.push_text(OWNER, f"  {code.capitalize()} ", user_id=OWNER)
        await until(lambda: "hey group" in fake_telegram.texts_to(-500), what="the group's message")
        await settled(orchestrator)
        [decided] = await orchestrator.store.approvals(pending_only=False)
    assert f"echo: {code}" in fake_telegram.texts_to(-500)  # there, a message for the agent
    assert (decided.status, decided.how) == ("allowed", "telegram code")
    assert any(t.startswith("Allowed.") for t in fake_telegram.texts_to(OWNER))


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTPS://Example.COM:443/a?b=1#top", "https://example.com/a?b=1"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("https://[::1]:443/", "https://[::1]/"),
    ],
)
def test_a_url_is_asked_about_in_one_spelling(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


def test_a_writable_mount_under_ask_is_staged_and_others_are_not(tmp_path: Path) -> None:
    raw = {
        "data_dir": str(tmp_path),
        "model": {"name": "m", "api_key": "k"},
        "agents": [
            {
                "id": "asked",
                "mounts": [{"host": str(tmp_path), "container": "/mnt/n", "read_only": False}],
                "approvals": {"ask": ["mounts"]},
            },
            {
                "id": "free",
                "mounts": [{"host": str(tmp_path), "container": "/mnt/n", "read_only": False}],
            },
        ],
    }
    settings = Settings.model_validate(raw)
    asked = agent_spec(settings, settings.agents[0]).mounts
    free = agent_spec(settings, settings.agents[1]).mounts
    assert [(m.read_only, m.staged) for m in asked] == [(False, True)]
    assert [(m.read_only, m.staged) for m in free] == [(False, False)]
