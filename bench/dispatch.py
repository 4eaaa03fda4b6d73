"""1. Dispatch overhead with a warm agent: what the orchestrator adds on each side of the agent."""

from __future__ import annotations

from .harness import (
    BenchContext,
    Row,
    at_most,
    benchmark,
    chat_id,
    commit_latencies,
    config,
    fake_model,
    fake_telegram,
    ms,
    orchestrator,
    roundtrip,
)

WARMUP = 10


@benchmark(
    "dispatch",
    "Dispatch overhead (warm agent, Docker runtime)",
    """One agent in a warm container, one message at a time (each waits for the previous reply,
    so there is no batching). Inbound: `Dispatcher.accept` entered -> the agent has the task
    (its `received` time). Outbound: the agent's final text is ready (`answered`) -> the
    Telegram channel's `send` is called. Both include the SQLite commits (fsync) on the way.""",
)
async def dispatch(ctx: BenchContext) -> list[Row]:
    count = ctx.size(1000, 100)
    texts: list[str] = []
    e2e: list[float] = []
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        raw = config(ctx.data_dir("dispatch"), model.url, ctx.api_key, telegram, warm=True)
        async with orchestrator(ctx, raw, "docker") as (_, probes):
            for i in range(WARMUP):
                await roundtrip(telegram, chat_id(0), f"warmup-{i}")
            for i in range(count):
                text = f"dispatch-{i:05d}"
                pushed, arrived = await roundtrip(telegram, chat_id(0), text)
                texts.append(text)
                e2e.append(arrived - pushed)
    inbound = ms(probes.inbound(t) for t in texts)
    outbound = ms(probes.outbound(t) for t in texts)
    agent = ms(
        float(probes.agent[t]["answered"]) - float(probes.agent[t]["received"]) for t in texts
    )
    commits = ms(commit_latencies(ctx.data_dir("commits"), ctx.size(1000, 200)))
    panel = "Dispatch overhead, warm agent (Docker)"
    rows = [
        Row("inbound: accept -> agent has task", "ms", inbound, at_most(5, 20), plot=panel),
        Row("outbound: agent answered -> send call", "ms", outbound, at_most(5, 20), plot=panel),
        Row("inside the agent (model call via proxy)", "ms", agent),
        Row("end to end: user push -> reply at fake Telegram", "ms", ms(e2e)),
        Row("for scale: one SQLite commit (WAL, synchronous=FULL) here", "ms", commits),
    ]
    ctx.note(
        "On the inbound path the store commits twice before the agent has the task (the"
        " message, the task claim); on the outbound path once (the"
        f" task's outcome with its reply). A commit costs {rows[-1].p50:.2f} ms (p50) on this"
        " disk; the rest is python-telegram-bot handing the update over, the event loop, and"
        " HTTP over the agent's Unix socket."
    )
    return rows
