"""A burst over many chats, each with an agent of its own, through the real python-telegram-bot
and the fake Bot API: every chunk of every reply is sent exactly once.

The race this holds (issue 23): the outbox read its pending replies while a chat's delivery
finished; the stale rows then started the same reply again. It needs replies of several agents
finishing together, so the burst spreads over 20 chats with 20 agents, round after round.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable

from clawpen.app import Orchestrator
from tests.conftest import running, settled
from tests.fakes.fake_telegram import FakeTelegram
from tests.waiting import until

CHATS = 20
PER_CHAT = 10
ROUNDS = 12
FIRST_CHAT = 2001


def agents_and_pairings() -> dict[str, object]:
    agents = [{"id": f"a{n}", "system_prompt": "You are a test."} for n in range(CHATS)]
    pairings = [{"channel": f"telegram:{FIRST_CHAT + n}", "agent": f"a{n}"} for n in range(CHATS)]
    return {"agents": agents, "pairings": pairings}


def answered(telegram: FakeTelegram) -> set[str]:
    return {w for m in telegram.sent for w in re.findall(r"r\d+c\d+m\d+", m["text"])}


async def test_a_burst_over_many_agents_sends_every_chunk_exactly_once(
    orchestrator_factory: Callable[..., Orchestrator],
    fake_telegram: FakeTelegram,
) -> None:
    unpaced = {"per_chat": 0, "overall": 0}  # as many deliveries at once as the burst allows
    orchestrator = orchestrator_factory(
        telegram=fake_telegram,
        config_channels={
            "cli": {},
            "telegram": {
                "token": fake_telegram.token,
                "api_base_url": fake_telegram.url,
                "poll_timeout": 2,
                "rate_limit": unpaced,
            },
        },
        **agents_and_pairings(),
    )
    pushed: list[str] = []
    async with running(orchestrator):
        for round_ in range(ROUNDS):
            burst = [
                (FIRST_CHAT + n, f"r{round_}c{n}m{i}")
                for i in range(PER_CHAT)
                for n in range(CHATS)
            ]
            await asyncio.gather(*(fake_telegram.push_text(chat, text) for chat, text in burst))
            pushed += [text for _, text in burst]

            await until(
                lambda want=set(pushed): answered(fake_telegram) >= want,
                timeout=60,
                what=f"every message of round {round_} answered",
            )
            await settled(orchestrator, timeout=60)  # no send can follow

    sent = fake_telegram.sent
    mentions = Counter(w for m in sent for w in re.findall(r"r\d+c\d+m\d+", m["text"]))
    doubled = {text: n for text, n in mentions.items() if n > 1}
    assert doubled == {}, f"{len(doubled)} messages answered more than once"
    assert set(mentions) == set(pushed)  # and none lost
    texts = Counter((m["chat"]["id"], m["text"]) for m in sent)
    assert [key for key, n in texts.items() if n > 1] == []
    assert fake_telegram.calls.count("sendMessage") == len(sent)
