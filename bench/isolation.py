"""6. The cost of isolation: the same sequential messages with and without containers."""

from __future__ import annotations

from .fakes import config, conversation, fake_model, fake_telegram, roundtrip
from .harness import BenchContext, Row, benchmark, ms
from .inprocess import Probes, orchestrator

WARMUP = 10


@benchmark(
    "isolation",
    "Cost of isolation: Docker vs. in-process agents, sequential messages",
    """Two orchestrators in this process, one with the Docker runtime and one with the in-process
    runtime (`InProcessRuntime`: the same agent code as a thread, no container), each with its
    own fake Telegram and a warm agent. Messages alternate between them, one at a time, timed
    end to end: pushed into the fake Telegram -> the reply arrives at the fake Telegram. The
    throughput ratio is in the throughput section.""",
)
async def isolation(ctx: BenchContext) -> list[Row]:
    count = ctx.size(500, 60)
    e2e: dict[str, list[float]] = {"docker": [], "inprocess": []}
    ids: dict[str, list[str]] = {"docker": [], "inprocess": []}
    probes: dict[str, Probes] = {}
    async with (
        fake_model(ctx) as model,
        fake_telegram() as docker_telegram,
        fake_telegram() as inprocess_telegram,
    ):
        telegrams = {"docker": docker_telegram, "inprocess": inprocess_telegram}
        docker_raw = config(
            ctx.data_dir("isodock"), model.url, ctx.api_key, docker_telegram, warm=True
        )
        inprocess_raw = config(
            ctx.data_dir("isoproc"), model.url, ctx.api_key, inprocess_telegram, warm=True
        )
        async with (
            orchestrator(ctx, docker_raw, "docker") as (_, probes["docker"]),
            orchestrator(ctx, inprocess_raw, "inprocess") as (_, probes["inprocess"]),
        ):
            for i in range(WARMUP + count):
                order = ("docker", "inprocess") if i % 2 else ("inprocess", "docker")
                for kind in order:
                    trip = await roundtrip(telegrams[kind], conversation(i), f"iso-{kind}-{i:05d}")
                    if i >= WARMUP:
                        e2e[kind].append(trip.seconds)
                        ids[kind].append(trip.platform_id)
    panel = "End to end, one message at a time: Docker vs. in-process agent"
    rows = [
        Row("Docker runtime: push -> reply", "ms", ms(e2e["docker"]), plot=panel),
        Row("in-process runtime: push -> reply", "ms", ms(e2e["inprocess"]), plot=panel),
    ]
    rows += [
        Row("ratio of p50s, Docker / in-process", "ratio", [rows[0].p50 / rows[1].p50]),
        Row("ratio of p99s, Docker / in-process", "ratio", [rows[0].p99 / rows[1].p99]),
    ]
    ratio = rows[2].p50
    ctx.note(
        f"Docker / in-process end to end: {ratio:.2f} at p50. Both agents talk to the orchestrator"
        " over the same kind of Unix socket; the difference is where the agent's Python runs."
        " In a container it is its own process, on the other core; in-process it is a thread"
        " that shares the orchestrator's interpreter lock, so on this 2-core machine the"
        " in-process baseline is not free either"
        + (" and comes out slower." if ratio < 1 else ".")
        + " Warm, isolation costs nothing measurable per message; what it costs is the cold"
        " start (see above) and each container's memory."
    )
    for kind, label in (("docker", "Docker"), ("inprocess", "in-process")):
        probe, done = probes[kind], ids[kind]
        rows += [
            Row(
                f"{label}: inbound (accept -> agent has task)",
                "ms",
                ms(probe.inbound(i) for i in done),
            ),
            Row(f"{label}: inside the agent", "ms", ms(probe.inside(i) for i in done)),
            Row(
                f"{label}: outbound (agent answered -> reply_sending)",
                "ms",
                ms(probe.outbound(i) for i in done),
            ),
        ]
    return rows
