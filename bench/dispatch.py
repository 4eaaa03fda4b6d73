"""1. Dispatch overhead with a warm agent: what the orchestrator adds on each side of the agent,
and the end-to-end time of one message before and after the core rebuild."""

from __future__ import annotations

from .children import OrchestratorProcess, orchestrator_process
from .fakes import BenchTelegram, config, conversation, fake_model, fake_telegram, roundtrip
from .floors import commit_latencies
from .harness import (
    BenchContext,
    Row,
    at_most,
    benchmark,
    bootstrap_ratio,
    ms,
    ratio_row,
)
from .inprocess import orchestrator
from .looplag import Stall

WARMUP = 10


@benchmark(
    "dispatch",
    "Dispatch overhead (warm agent, Docker runtime), before and after",
    """One agent in a warm container, one message at a time (each waits for the previous reply,
    so there is no batching). First an orchestrator of this tree in the bench process, observed
    through its log events (`clawpen.obs.logging.subscribe`): inbound is `message_arrived`
    (`Intake.accept` entered) -> the agent has the task (its own `agentReceived`);
    outbound is the agent's `agentAnswered` -> `reply_sending` (just before the channel's
    send). Both include the SQLite commits (fsync) on the way. Then before and after: the
    baseline and this tree each run as `clawpen run` in a child process with one warm agent,
    and messages alternate between them (the order swaps every round), timed the same way
    for both: pushed into the fake Telegram -> the reply reached it.""",
)
async def dispatch(ctx: BenchContext) -> list[Row]:
    rows = await split(ctx)
    rows += await before_after(ctx)
    commits = ms(commit_latencies(ctx.data_dir("commits"), ctx.size(1000, 200)))
    rows.append(Row("floor: one SQLite commit (WAL, synchronous=FULL) here", "ms", commits))
    ctx.note(
        "On the inbound path the store commits the message, then the task claim, before the"
        " agent has the task; on the outbound path once (the task's outcome with its reply)."
        f" A bare commit costs {rows[-1].p50:.2f} ms (p50) on this disk; this tree commits on"
        " the store's writer thread (group commit), not on the event loop."
    )
    return rows


async def split(ctx: BenchContext) -> list[Row]:
    """This tree in-process: where a message's time goes."""
    count = ctx.size(1000, 100)
    trips = []
    async with fake_model(ctx) as model, fake_telegram() as telegram:
        raw = config(ctx.data_dir("dispatch"), model.url, ctx.api_key, telegram, warm=True)
        async with orchestrator(ctx, raw, "docker") as (_, probes):
            for i in range(WARMUP):
                await roundtrip(telegram, conversation(i), f"warmup-{i}")
            for i in range(count):
                trips.append(await roundtrip(telegram, conversation(i), f"dispatch-{i:05d}"))
    ids = [t.platform_id for t in trips]
    panel = "Dispatch overhead, warm agent (Docker), this tree"
    return [
        Row(
            "inbound: message_arrived -> agent has task",
            "ms",
            ms(probes.inbound(i) for i in ids),
            at_most(5, 20),
            plot=panel,
        ),
        Row(
            "outbound: agent answered -> reply_sending",
            "ms",
            ms(probes.outbound(i) for i in ids),
            at_most(5, 20),
            plot=panel,
        ),
        Row("inside the agent (model call via proxy)", "ms", ms(probes.inside(i) for i in ids)),
        Row(
            "end to end, in-process: push -> reply at fake Telegram",
            "ms",
            ms(t.seconds for t in trips),
        ),
    ]


async def before_after(ctx: BenchContext) -> list[Row]:
    """The baseline and this tree as child processes, messages alternating between them."""
    count = ctx.size(1000, 100)
    baseline = await ctx.baseline()
    trees = {"before": baseline, "after": ctx.current}
    e2e: dict[str, list[float]] = {"before": [], "after": []}
    async with (
        fake_model(ctx) as model,
        fake_telegram() as before_telegram,
        fake_telegram() as after_telegram,
    ):
        telegrams = {"before": before_telegram, "after": after_telegram}
        raws = {
            side: config(
                ctx.data_dir(f"e2e{side}"), model.url, ctx.api_key, telegrams[side], warm=True
            )
            for side in trees
        }
        async with (
            orchestrator_process(ctx, baseline, raws["before"]) as before,
            orchestrator_process(ctx, ctx.current, raws["after"]) as after,
        ):
            processes: dict[str, tuple[OrchestratorProcess, BenchTelegram]] = {
                "before": (before, before_telegram),
                "after": (after, after_telegram),
            }
            for i in range(WARMUP):
                for side in ("before", "after"):
                    await roundtrip(processes[side][1], conversation(i), f"warmup-{side}-{i}")
            lag = await after.lag()
            for i in range(count):
                order = ("before", "after") if i % 2 else ("after", "before")
                for side in order:
                    _, telegram = processes[side]
                    trip = await roundtrip(telegram, conversation(i), f"e2e-{side}-{i:05d}")
                    e2e[side].append(trip.seconds)
            lagged = await after.lag()
    panel = "End to end, one message at a time: before vs after"
    rows = [
        Row(f"{trees[side].label}: push -> reply", "ms", ms(e2e[side]), plot=panel)
        for side in trees
    ]
    if lag is not None and lagged is not None:
        stall = Stall.between(lag.lag, lagged.lag)
        rows += [
            Row(
                f"{ctx.current.label}: longest event-loop stall, one message at a time",
                "ms",
                [1000 * stall.longest],
                note="exact" if stall.exact is not None else "bucket bound",
            ),
            Row(
                f"{ctx.current.label}: loop-lag samples over 5 ms, one message at a time",
                "samples",
                [float(stall.over(0.005))],
                count=f"of {stall.samples}",
                digits=0,
            ),
        ]
    before_row, after_row = rows[:2]
    low, high = bootstrap_ratio(before_row.samples, after_row.samples, 99)
    noise = f"95% interval {low:.2f}-{high:.2f}"
    worse = after_row.p99 > before_row.p99
    within_noise = worse and low <= 1.0
    rows += [
        ratio_row("end to end p50, after / before", before_row.p50, after_row.p50, "ms"),
        ratio_row(
            "end to end p99, after / before (dispatch overhead no worse)",
            before_row.p99,
            after_row.p99,
            "ms",
            at_most(1.0),
            note=noise,
            waived=f"within measurement noise: its {noise} holds 1.0" if within_noise else "",
        ),
    ]
    ctx.note(
        f"End to end, one message at a time: p50 {before_row.p50:.2f} ms before,"
        f" {after_row.p50:.2f} ms after; p99 {before_row.p99:.2f} ms before,"
        f" {after_row.p99:.2f} ms after. The p99 of {count} samples rests on its slowest"
        f" {max(1, count // 100)}: drawn again (bootstrap) the p99 ratio falls in"
        f" {low:.2f}-{high:.2f} (95%), which is the measurement noise on that row."
    )
    return rows
