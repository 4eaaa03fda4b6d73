"""Conversations in parallel: another chat's answer while one chat's command runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from clawpen.core.board import Board

from .fakes import agent_id, config, conversation, fake_model, fake_telegram, roundtrip
from .harness import BenchContext, Row, benchmark, ms, wait_until
from .inprocess import orchestrator

LONG = 2  # seconds the long chat's command runs


def at_work(board: Board, chat: str) -> Callable[[], bool]:
    return lambda: board.working_on(agent_id(0), chat) is not None


@benchmark(
    "parallel",
    "Conversations in parallel (one chat's long command, another chat's answer)",
    f"""One agent in a container; chat A asks for `run: sleep {LONG}`, and once its task is at
    work chat B says something: B's push -> B's answer reached the fake Telegram, with the
    agent's `max_parallel` at 1 (one task at a time: B waits behind A) and at 3 (the
    default: B runs beside A in another lane of the same container).""",
)
async def parallel(ctx: BenchContext) -> list[Row]:
    count = ctx.size(10, 2)
    chat_a = f"telegram:{conversation(0)}"
    rows = []
    for lanes in (1, 3):
        async with fake_model(ctx) as model, fake_telegram() as telegram:
            raw = config(ctx.data_dir(f"parallel-{lanes}"), model.url, ctx.api_key, telegram)
            raw["agents"][0]["max_parallel"] = lanes
            async with orchestrator(ctx, raw, "docker") as (orch, _):
                await roundtrip(telegram, conversation(1), "warmup")
                samples = []
                for i in range(count):
                    long_done = asyncio.Event()
                    telegram.on_reply = lambda text, _at, done=long_done: (
                        done.set() if text.startswith("tool said") else None
                    )
                    await telegram.push_text(conversation(0), f"run: sleep {LONG}; echo {i}")
                    await wait_until(
                        at_work(orch.board, chat_a),
                        60,
                        "chat A's task at work",
                        every=0.002,
                    )
                    trip = await roundtrip(telegram, conversation(1), f"beside-{lanes}-{i}")
                    samples.append(trip.arrived - trip.pushed)
                    async with asyncio.timeout(60):
                        await long_done.wait()
        rows.append(
            Row(
                f"chat B answered while chat A's {LONG} s command runs, max_parallel={lanes}",
                "ms",
                ms(samples),
                digits=0,
            )
        )
    ctx.note(
        f"With one lane, B waits for A's command ({LONG} s) and its answer; with three, B is"
        f" answered in {rows[1].p50:.0f} ms (p50) while A's command still runs."
    )
    return rows
