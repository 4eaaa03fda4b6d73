"""5. The model proxy: what it adds to the time to the first streamed token."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import anthropic
import httpx2

from clawpen.door.budget import Charge
from clawpen.door.proxy import ModelProxy
from clawpen.door.server import AgentSession

from .fakes import fake_model
from .harness import BenchContext, Row, at_most, benchmark, ms

WARMUP = 10
REQUEST = {
    "model": "claude-bench",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hello, how fast is the first token?"}],
}


@benchmark(
    "proxy",
    "Model proxy: added time to the first streamed token",
    """The real `anthropic` SDK streams a message and we time request start -> first text delta:
    (a) directly to the fake model over TCP loopback, (b) through an `AgentSession`'s Unix socket
    and its `ModelProxy` (which adds the key and forwards to the same fake). Keep-alive clients,
    interleaved samples (the order alternates each round); the SDK runs in a worker thread while
    the proxy and the fake serve on the event loop.""",
)
async def proxy(ctx: BenchContext) -> list[Row]:
    count = ctx.size(500, 50)
    async with fake_model(ctx) as model:
        upstream = aiohttp.ClientSession()
        proxy = ModelProxy(upstream, model.url, ctx.api_key, ignore_usage)
        session = AgentSession("bench", ctx.data_dir("proxy"), proxy)
        await session.start()
        try:
            direct, proxied = await asyncio.to_thread(
                measure, model.url, ctx.api_key, session.socket_path, count
            )
        finally:
            await session.close()
            await upstream.close()
    panel = "Time to first streamed token (anthropic SDK)"
    rows = [
        Row("direct: SDK -> fake model (TCP loopback)", "ms", ms(direct), plot=panel),
        Row("proxied: SDK -> unix socket -> ModelProxy -> fake", "ms", ms(proxied), plot=panel),
    ]
    added = rows[1].p50 - rows[0].p50
    paired = ms(p - d for p, d in zip(proxied, direct, strict=True))
    rows += [
        Row("added by the proxy (difference of the p50s)", "ms", [added], at_most(5)),
        Row("added, per interleaved pair (proxied - direct)", "ms", paired),
    ]
    return rows


async def ignore_usage(charge: Charge) -> None:
    pass


def measure(url: str, api_key: str, socket: Path, count: int) -> tuple[list[float], list[float]]:
    direct = anthropic.Anthropic(
        api_key=api_key,
        base_url=url,
        http_client=httpx2.Client(),
        max_retries=0,
        default_headers={"x-api-key": api_key},  # SDK 2.x sends a bearer token; the fake wants this
    )
    proxied = anthropic.Anthropic(
        api_key="not-needed-behind-the-proxy",
        base_url="http://agent",
        http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds=str(socket))),
        max_retries=0,
    )
    times: dict[str, list[float]] = {"direct": [], "proxied": []}
    clients = {"direct": direct, "proxied": proxied}
    try:
        for i in range(WARMUP + count):
            order = ("direct", "proxied") if i % 2 else ("proxied", "direct")
            for name in order:
                seconds = first_token(clients[name])
                if i >= WARMUP:
                    times[name].append(seconds)
    finally:
        direct.close()
        proxied.close()
    return times["direct"], times["proxied"]


def first_token(client: anthropic.Anthropic) -> float:
    """Seconds from the request start to the first text delta; the stream is read to its end."""
    first = None
    began = time.perf_counter()
    stream = client.messages.create(**REQUEST, stream=True)  # type: ignore[call-overload]
    with stream:
        for event in stream:
            if (
                first is None
                and event.type == "content_block_delta"
                and event.delta.type == "text_delta"
            ):
                first = time.perf_counter() - began
    if first is None:
        raise RuntimeError("the stream had no text delta")
    return first
