"""Bursts over 20 chats, each with its own agent: every chunk is sent exactly once (issue 23).

A reply was sometimes sent twice under a burst: the race needed replies of several agents
finishing together. This benchmark is the check in the bench's own setting (`clawpen run` in a
child process, real containers, the fake Telegram), and it fails the run on a single double.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from functools import partial
from pathlib import Path

from .fakes import chat_id, fake_model
from .harness import BenchContext, Row, at_most, benchmark, wait_until
from .loadgen import AGENTS, TOKEN, start


@benchmark(
    "exactly_once",
    "Bursts over 20 agents: every chunk sent exactly once",
    """One orchestrator (this tree, `clawpen run` in a child process, 20 warm agents in
    containers, each paired with its own chat, the fake Telegram). Ten times, a burst of 1,000
    messages is pushed at once, round robin over the chats, and the run waits until every
    message was in a reply and no reply is pending in the store. Counted: the messages answered
    more than once, and the `sendMessage` calls the fake took beyond the chunks the store
    recorded as sent. Either above zero fails the benchmark.""",
)
async def exactly_once(ctx: BenchContext) -> list[Row]:
    bursts, size = ctx.size(10, 2), ctx.size(1000, 200)
    doubled: list[float] = []
    extra_sends: list[float] = []
    answers: Counter[str] = Counter()  # token -> the replies that carried it

    def on_reply(text: str, arrived: float) -> None:
        answers.update(TOKEN.findall(text))

    async with fake_model(ctx) as model, contextlib.AsyncExitStack() as stack:
        contestant = await start(
            ctx, stack, model, "once", ctx.current.label, ctx.current, "docker"
        )
        telegram, db = contestant.telegram, contestant.db
        telegram.on_reply = on_reply
        for b in range(bursts):
            sends_before, chunks_before = len(telegram.sent), chunks_sent(db)
            tokens = [f"tp{b}{j:06d}x" for j in range(size)]
            for j, token in enumerate(tokens):
                await telegram.push_text(chat_id(j % AGENTS), token)
            await wait_until(partial(all_answered, answers, tokens), 300, "every answer")
            await wait_until(lambda: pending(db) == 0, 60, "no reply pending")
            doubled.append(sum(1 for token in tokens if answers[token] > 1))
            extra_sends.append(
                (len(telegram.sent) - sends_before) - (chunks_sent(db) - chunks_before)
            )
    if any(doubled) or any(extra_sends):
        raise AssertionError(
            f"replies sent more than once: {sum(doubled):.0f} messages answered twice,"
            f" {sum(extra_sends):.0f} sendMessage calls beyond the chunks recorded"
            f" ({bursts} bursts of {size})"
        )
    count = f"{bursts} bursts x {size} messages"
    return [
        Row("messages answered more than once, per burst", "", doubled, at_most(0), count=count),
        Row(
            "sendMessage calls beyond the chunks recorded", "", extra_sends, at_most(0), count=count
        ),
    ]


def all_answered(answers: Counter[str], tokens: list[str]) -> bool:
    return all(answers[token] for token in tokens)


def chunks_sent(db: Path) -> int:
    return query(db, "SELECT coalesce(sum(chunks_sent), 0) FROM replies")


def pending(db: Path) -> int:
    return query(db, "SELECT count(*) FROM replies WHERE status='pending'")


def query(db: Path, sql: str) -> int:
    """Read the orchestrator's store while it runs (SQLite WAL lets another process read)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute(sql).fetchone()[0])
