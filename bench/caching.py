"""Prompt caching: the share of a conversation's input tokens billed uncached."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from clawpen.demo.model import FakeModel
from clawpen_agent.loop import run_task
from clawpen_agent.protocol import ChatLine, Task
from clawpen_agent.session import Sessions

from .harness import BenchContext, Row, at_most, benchmark

TURNS = 20
SYSTEM = (
    "You are a helpful assistant for a small team. Answer briefly and precisely; use your "
    "tools to check facts in the workspace before you answer. "
) * 8


def words(turn: int) -> str:
    """Every other turn asks for a tool (a shell command); the others are plain questions."""
    if turn % 2:
        return f"please check the disk: run: echo step {turn}; ls -la /"
    return f"turn {turn}: what do you make of this? " + "some context " * 30


def unmarked(request: dict[str, Any]) -> dict[str, Any]:
    """The request as an agent without caching would send it."""
    text = json.dumps(request).replace(', "cache_control": {"type": "ephemeral"}', "")
    return dict(json.loads(text))


def conversation(url: str, root: Path, cached: bool) -> list[dict[str, int]]:
    """Twenty turns of one chat through the agent's own loop, against the fake model over
    HTTP; the usage of every model call."""
    usage: list[dict[str, int]] = []

    def call(request: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(request if cached else unmarked(request)).encode()
        post = urllib.request.Request(
            url + "/v1/messages", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=30) as answer:
            message: dict[str, Any] = json.loads(answer.read())
        usage.append(message["usage"])
        return message

    sessions = Sessions(str(root))
    for turn in range(TURNS):
        task = Task(turn + 1, "telegram:1", [ChatLine("u", words(turn))], "m", SYSTEM)
        result = run_task(task, call, sessions, str(root))
        assert result.error is None, result.error
    return usage


def shares(usage: list[dict[str, int]]) -> tuple[float, float]:
    """(% of input tokens billed uncached, % of the uncached price paid): a cache write is
    billed at 1.25 times the input price, a read at 0.1 times."""
    plain = sum(u["input_tokens"] for u in usage)
    written = sum(u["cache_creation_input_tokens"] for u in usage)
    read = sum(u["cache_read_input_tokens"] for u in usage)
    total = plain + written + read
    return 100 * (plain + written) / total, 100 * (plain + 1.25 * written + 0.1 * read) / total


@benchmark(
    "caching",
    "Prompt caching: input tokens billed uncached over a 20-turn conversation",
    f"""One chat of {TURNS} turns, every other one with a tool call (two model calls), through
    the agent's own loop (`clawpen_agent.loop.run_task`) against the fake model over HTTP,
    whose `usage` accounts prompt caching by prefix as the API does (breakpoints, 5-minute
    lifetime, 1024-token minimum, 20-block lookback: `clawpen.demo.prompt_cache`). The agent
    marks three breakpoints per call (tools, system prompt, the conversation so far). Share
    uncached = (input_tokens + cache_creation_input_tokens) / all input tokens; the same
    conversation without breakpoints is 100%. Target: <= 15%.""",
)
async def caching(ctx: BenchContext) -> list[Row]:
    results = {}
    for cached in (True, False):
        model = FakeModel()
        url = await model.start()
        try:
            root = ctx.data_dir("cache" if cached else "nocache")
            results[cached] = await asyncio.to_thread(conversation, url, root, cached)
        finally:
            await model.close()
    with_share, with_price = shares(results[True])
    without_share, _ = shares(results[False])
    calls = len(results[True])
    total = sum(sum(u.values()) - u["output_tokens"] for u in results[True])
    ctx.note(
        f"{calls} model calls, {total} input tokens in all; with caching, input costs"
        f" {with_price:.1f}% of the uncached price (writes at 1.25x, reads at 0.1x)."
    )
    return [
        Row("uncached share, with cache breakpoints", "%", [with_share], at_most(p50=15)),
        Row("uncached share, without breakpoints", "%", [without_share]),
        Row("input price paid, with cache breakpoints", "% of uncached", [with_price]),
    ]
