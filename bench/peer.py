"""5. A peer in the bench: clawpen next to nanobot, through the same fake Telegram and the same
fake model, in alternating rounds (``python -m bench --peer nanobot``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clawpen.demo.model import FakeModel
from clawpen.runtime.pool import instance_id

from . import peer_nanobot
from .fakes import BenchTelegram, chat_id, conversation, fake_model, fake_telegram, roundtrip
from .harness import BenchContext, Row, at_least, at_most, benchmark, ms, percentile
from .loadgen import AGENTS, start
from .procs import (
    cgroups_cpu,
    container_cgroups,
    container_pids,
    process_tree,
    pss_kb,
    threads_cpu,
    tree_cpu,
)

TOKEN = re.compile(r"pb\d+x")
ORDER = ("clawpen", "nanobot", "nanobot", "clawpen")  # ABBA: drift on the machine hits both
SETTLE = 2.0  # seconds after the last reply before an idle window or a memory reading
QUIET = 30.0  # a burst is over when every message was answered, or nothing came for this long


@dataclass
class Burst:
    messages: int
    seconds: float  # first push -> the last answer reached the fake
    cpu: float  # CPU seconds of everything the system runs, over the burst
    doubled: int  # messages answered in more than one reply
    lost: int  # messages neither named in a reply nor given to the model
    unnamed: int  # messages no reply named (given to the model in a turn with others)
    replies: int

    @property
    def rate(self) -> float:
        return (self.messages - self.lost) / self.seconds


@dataclass
class Side:
    """One system under test: its fake Telegram, and how to read what everything it runs
    used (CPU seconds, precise CPU seconds for idle windows, PSS in MB)."""

    name: str
    telegram: BenchTelegram
    cpu: Callable[[], float]
    idle_cpu: Callable[[], float]
    pss: Callable[[], float]
    warm: list[float] = field(default_factory=list)  # seconds
    warm_cpu: list[float] = field(default_factory=list)  # CPU seconds per warm message
    bursts: list[Burst] = field(default_factory=list)
    loaded_pss: float = 0.0
    idle_pss: float = 0.0
    idle_share: float = 0.0  # of one core
    parts: dict[str, float] = field(default_factory=dict)  # idle share by part


def tree_pss(root: int) -> float:
    return sum(_pss(pid) for pid in process_tree(root)) / 1024


def _pss(pid: int) -> int:
    try:
        return pss_kb(pid)
    except OSError:
        return 0


def precise_tree_cpu(root: int) -> float:
    return sum(threads_cpu(pid) for pid in process_tree(root))


def ratio(clawpen: float, nanobot: float) -> float:
    """clawpen / nanobot (nan when nanobot's figure is 0)."""
    return clawpen / nanobot if nanobot else float("nan")


def answered_counts(replies: list[str]) -> Counter[str]:
    """How many replies carried each token (a reply that names a token twice counts once)."""
    counts: Counter[str] = Counter()
    for text in replies:
        counts.update(set(TOKEN.findall(text)))
    return counts


def model_saw(requests: list[dict[str, Any]], tokens: set[str]) -> set[str]:
    """The tokens among ``tokens`` that some request gave the model in a user turn."""
    seen: set[str] = set()
    for request in requests:
        for message in request.get("messages", []):
            if message.get("role") == "user":
                seen.update(TOKEN.findall(json.dumps(message.get("content", ""))))
    return seen & tokens


async def run_burst(side: Side, model: FakeModel, r: int, messages: int) -> Burst:
    """``messages`` pushed at once, round robin over 20 chats; over when every one was in a
    reply, or when nothing came for ``QUIET`` seconds.

    The fake model echoes the last user message of a turn. A system that adds messages which
    arrive during a turn to that turn as messages of their own (nanobot does) gets one echo
    for several: those are counted as ``unnamed``, and as lost only if the model never got
    them either."""
    replies: list[str] = []
    answered: dict[str, float] = {}
    progress = asyncio.Event()

    def on_reply(text: str, arrived: float) -> None:
        replies.append(text)
        progress.set()
        for token in TOKEN.findall(text):
            answered.setdefault(token, arrived)

    peak = [0.0]

    async def sample_memory() -> None:
        while True:
            peak[0] = max(peak[0], await asyncio.to_thread(side.pss))
            await asyncio.sleep(1.0)

    tokens = [f"pb{r}{j:05d}x" for j in range(messages)]
    side.telegram.on_reply = on_reply
    sampler = asyncio.create_task(sample_memory())
    requests_before = len(model.requests)
    try:
        cpu = side.cpu()
        first = time.time()
        for j, token in enumerate(tokens):
            await side.telegram.push_text(chat_id(j % AGENTS), token)
        while len(answered) < messages:
            progress.clear()
            try:
                async with asyncio.timeout(QUIET):
                    await progress.wait()
            except TimeoutError:
                break
        seconds = max(answered.values(), default=time.time()) - first
        cpu = side.cpu() - cpu
        await asyncio.sleep(1.0)  # late doubles
    finally:
        side.telegram.on_reply = None
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    side.loaded_pss = max(side.loaded_pss, peak[0])
    counts = answered_counts(replies)
    doubled = sum(1 for t in tokens if counts[t] > 1)
    unnamed = {t for t in tokens if not counts[t]}
    given = await asyncio.to_thread(model_saw, model.requests[requests_before:], unnamed)
    lost = len(unnamed - given)
    return Burst(messages, seconds, cpu, doubled, lost, len(unnamed), len(replies))


async def run_round(side: Side, model: FakeModel, r: int, warm: int, burst: int) -> None:
    print(f"  round {r + 1}: {side.name}", flush=True)
    for i in range(warm):
        cpu = side.cpu()
        trip = await roundtrip(side.telegram, conversation(i), f"warm {r}-{i}")
        side.warm_cpu.append(side.cpu() - cpu)
        side.warm.append(trip.seconds)
    side.bursts.append(await run_burst(side, model, r, burst))
    await asyncio.sleep(SETTLE)


async def measure_idle(side: Side, window: float, parts: dict[str, Callable[[], float]]) -> None:
    before = {name: read() for name, read in parts.items()}
    used = side.idle_cpu()
    await asyncio.sleep(window)
    side.idle_share = (side.idle_cpu() - used) / window
    side.parts = {name: (read() - before[name]) / window for name, read in parts.items()}


@benchmark(
    "peer",
    "A peer: clawpen next to nanobot (python -m bench --peer nanobot)",
    f"""clawpen (this tree, `clawpen run` in a child process, 20 warm agents in containers,
    each paired with its own chat) and nanobot {peer_nanobot.VERSION} (`nanobot gateway`, in a
    venv of its own under ~/.cache/clawpen-bench, its home and workspace in the scratch dir),
    each with a fake Telegram of its own and both with the same fake model (no think time).
    nanobot has no Telegram base-URL setting: it reaches its fake through a local TLS
    CONNECT proxy that ends TLS for api.telegram.org with a certificate from the bench's own CA
    (`SSL_CERT_FILE`); its Anthropic provider's `apiBase` is the fake model. Rounds alternate
    clawpen, nanobot, nanobot, clawpen; each round: warm messages one at a time (push -> the
    reply seen at the fake, rotating over 25 chats so that histories stay short), then a burst
    of messages pushed at once round robin over 20 chats (over when every one was in a reply;
    doubles and losses counted). CPU is everything each system runs: for clawpen the
    orchestrator's process tree (adapters, their zygote) and its agent containers' cgroups,
    for nanobot its process tree; memory is PSS of the same (containers: their processes).
    Then each idles, one after the other. Ratios are clawpen / nanobot.""",
)
async def peer(ctx: BenchContext) -> list[Row]:
    warm, burst, window = ctx.size(50, 15), ctx.size(1000, 200), ctx.size(20, 5)
    venv = await asyncio.to_thread(peer_nanobot.install)
    async with fake_model(ctx) as model, contextlib.AsyncExitStack() as stack:
        contestant = await start(ctx, stack, model, "peer", "clawpen", ctx.current, "docker")
        orchestrator = contestant.process.pid
        instance = instance_id(contestant.process.data_dir)
        cgroups = await asyncio.to_thread(container_cgroups, ctx.docker, instance)
        if len(cgroups) < AGENTS:
            raise RuntimeError(f"found the cgroups of {len(cgroups)} of {AGENTS} containers")
        pids = await asyncio.to_thread(container_pids, ctx.docker, instance)

        def clawpen_pss() -> float:
            return tree_pss(orchestrator) + sum(_pss(pid) for pid in pids) / 1024

        clawpen = Side(
            "clawpen",
            contestant.telegram,
            cpu=lambda: tree_cpu(orchestrator) + cgroups_cpu(cgroups),
            idle_cpu=lambda: precise_tree_cpu(orchestrator) + cgroups_cpu(cgroups),
            pss=clawpen_pss,
        )
        telegram = await stack.enter_async_context(fake_telegram())
        bot = await stack.enter_async_context(
            peer_nanobot.nanobot(ctx.root / "nanobot", venv, model, ctx.api_key, telegram)
        )
        nanobot = Side(
            "nanobot",
            telegram,
            cpu=lambda: tree_cpu(bot.pid),
            idle_cpu=lambda: precise_tree_cpu(bot.pid),
            pss=lambda: tree_pss(bot.pid),
        )
        sides = {"clawpen": clawpen, "nanobot": nanobot}
        for side in sides.values():  # every chat's session exists before anything is timed
            await asyncio.gather(
                *(roundtrip(side.telegram, conversation(i), f"hi {i}", 120) for i in range(25)),
                *(roundtrip(side.telegram, chat_id(i), f"hello {i}", 120) for i in range(AGENTS)),
            )
        await asyncio.sleep(SETTLE)
        for side in sides.values():  # idle, warm, before any load
            side.idle_pss = await asyncio.to_thread(side.pss)
        for r, name in enumerate(ORDER):
            await run_round(sides[name], model, r, warm, burst)
        await measure_idle(
            clawpen,
            window,
            {
                "orchestrator": lambda: precise_tree_cpu(orchestrator),
                "containers": lambda: cgroups_cpu(cgroups),
            },
        )
        await measure_idle(nanobot, window, {})
        hops = len(bot.proxy.connects)
    return rows(ctx, clawpen, nanobot, window, hops)


def rows(ctx: BenchContext, clawpen: Side, nanobot: Side, window: float, hops: int) -> list[Row]:
    def per_message(side: Side) -> float:
        return sum(b.cpu for b in side.bursts) / sum(b.messages - b.lost for b in side.bursts)

    def rate(side: Side) -> float:
        return percentile([b.rate for b in side.bursts], 50)

    out = [
        Row(f"{s.name}: warm push -> reply", "ms", ms(s.warm), plot="Peer: warm message")
        for s in (clawpen, nanobot)
    ]
    out += [
        Row(
            "warm latency p50, clawpen / nanobot",
            "ratio",
            [ratio(percentile(clawpen.warm, 50), percentile(nanobot.warm, 50))],
            at_most(p50=1 / 20),
            digits=3,
        ),
        Row(
            "warm latency p99, clawpen / nanobot",
            "ratio",
            [ratio(percentile(clawpen.warm, 99), percentile(nanobot.warm, 99))],
            digits=3,
        ),
    ]
    for s in (clawpen, nanobot):
        count = f"{len(s.bursts)} bursts x {s.bursts[0].messages} messages"
        out += [
            Row(f"{s.name}: burst throughput", "msg/s", [b.rate for b in s.bursts], spread=True),
            Row(f"{s.name}: messages answered twice", "", [b.doubled for b in s.bursts],
                at_most(0), count=count, spread=True, digits=0),
            Row(f"{s.name}: messages lost (not in a reply, not given to the model)", "",
                [b.lost for b in s.bursts], at_most(0), count=count, spread=True, digits=0),
            Row(f"{s.name}: messages no reply named (answered with others in one turn)", "",
                [b.unnamed for b in s.bursts], count=count, spread=True, digits=0),
            Row(f"{s.name}: CPU per message in the burst", "ms", [per_message(s) * 1000],
                digits=3),
            Row(f"{s.name}: CPU per warm message", "ms", [sum(s.warm_cpu) / len(s.warm_cpu) * 1000],
                note="mean", digits=3),
        ]  # fmt: skip
    out += [
        Row(
            "burst throughput, clawpen / nanobot",
            "ratio",
            [ratio(rate(clawpen), rate(nanobot))],
            at_least(40),
        ),
        Row(
            "CPU per message in the burst, clawpen / nanobot",
            "ratio",
            [ratio(per_message(clawpen), per_message(nanobot))],
            at_most(1 / 40),
            digits=3,
        ),
        Row("clawpen: PSS idle, warm (orchestrator, adapters, containers)", "MB",
            [clawpen.idle_pss],
            digits=1),
        Row("nanobot: PSS idle, warm", "MB", [nanobot.idle_pss], digits=1),
        Row("PSS idle, clawpen / nanobot", "ratio", [ratio(clawpen.idle_pss, nanobot.idle_pss)]),
        Row("clawpen: PSS under the burst (peak)", "MB", [clawpen.loaded_pss], digits=1),
        Row("nanobot: PSS under the burst (peak)", "MB", [nanobot.loaded_pss], digits=1),
        Row("PSS under the burst, clawpen / nanobot", "ratio",
            [ratio(clawpen.loaded_pss, nanobot.loaded_pss)]),
        Row("clawpen: orchestrator processes idle, CPU share of one core", "%",
            [clawpen.parts["orchestrator"] * 100], at_most(0.5), digits=3),
        Row("clawpen: agent containers idle (20), CPU share of one core", "%",
            [clawpen.parts["containers"] * 100], digits=3),
        Row("nanobot: idle, CPU share of one core", "%", [nanobot.idle_share * 100], digits=3),
        Row("idle CPU, clawpen (everything) / nanobot", "ratio",
            [ratio(clawpen.idle_share, nanobot.idle_share)]),
    ]  # fmt: skip
    ctx.note(
        "What differs on purpose. clawpen runs each agent in a Docker container of its own (no"
        " network, read-only root, non-root) that reaches the model only through the"
        " orchestrator's proxy on a Unix socket, and each platform adapter in a process of its"
        " own; it commits every message, task and reply to SQLite (WAL, synchronous=FULL;"
        " what queued up meanwhile goes in one transaction, an fsync each) before acting on it"
        " or acknowledging it; messages that arrive while"
        " a conversation's turn runs are batched into its next turn, so a burst costs a few"
        " turns per chat. nanobot runs everything in one process (`nanobot-gateway`, no child"
        " processes): the Telegram client (python-telegram-bot), the agent loop of every chat"
        " and the tools, with no isolation between chats or from the host (its shell tool can"
        " be wrapped in bubblewrap, `tools.exec.sandbox`, off by default and here); it keeps"
        " sessions in memory and rewrites them as JSONL files without an fsync per turn; it"
        " adds messages that arrive during a turn to that turn as messages of their own, and"
        " per message it also sets a reaction and a typing action at Telegram. The fake model"
        " echoes a turn's last user message, so nanobot's one answer to several messages names"
        " only the last (`no reply named`); such a message counts as lost only if no request"
        " ever gave it to the model."
    )
    ctx.note(
        f"nanobot {peer_nanobot.VERSION} reached its fake Telegram through the bench's TLS"
        f" CONNECT proxy ({hops} CONNECTs of api.telegram.org, each handshake checked against"
        f" the bench's CA); idle windows of {window:.0f} s, clawpen's first. CPU per message"
        " counts everything each system ran over the burst (clawpen's agent containers"
        " included), divided by the messages answered."
    )
    return out
