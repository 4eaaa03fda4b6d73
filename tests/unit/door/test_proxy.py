"""The model proxy on an agent's socket, driven by the real Anthropic SDK.

The agent holds no key: whatever it sends as credentials is dropped and the real key is added
outside. Answers, SSE streams and upstream errors reach the SDK as if it spoke to Anthropic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anthropic
import httpx
import httpx2
import pytest
from aiohttp import web

from clawpen.demo.model import FakeModel
from clawpen.door.budget import Charge
from clawpen.door.proxy import ModelProxy
from clawpen.door.server import AgentSession
from tests.fakes import serve_on_loopback
from tests.waiting import until

AGENT_KEY = "not-the-key"
MODEL = "claude-test"
T = TypeVar("T")


@dataclass
class Rig:
    fake: FakeModel
    key: str
    socket_path: Path
    usage: list[tuple[str, str, int, int]] = field(default_factory=list)

    def client(self, **overrides: Any) -> anthropic.Anthropic:
        """The SDK as an agent would hold it: a made-up key, the socket as transport."""
        transport = httpx2.HTTPTransport(uds=str(self.socket_path))
        options: dict[str, Any] = {"max_retries": 0, "timeout": 10.0, **overrides}
        return anthropic.Anthropic(
            api_key=AGENT_KEY,
            base_url="http://agent",
            http_client=httpx2.Client(transport=transport),
            **options,
        )


@contextlib.asynccontextmanager
async def serve_proxy(
    tmp_path: Path, fake: FakeModel, base_url: str, key: str
) -> AsyncIterator[Rig]:
    rig = Rig(fake=fake, key=key, socket_path=tmp_path / "sock" / "agent.sock")

    async def collect(charge: Charge) -> None:
        rig.usage.append((charge.agent_id, charge.model, charge.input_tokens, charge.output_tokens))

    upstream = aiohttp.ClientSession()
    session = AgentSession("a1", tmp_path / "sock", ModelProxy(upstream, base_url, key, collect))
    await session.start()
    try:
        yield rig
    finally:
        await session.close()
        await upstream.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeModel]:
    model = FakeModel(api_key="sk-ant-real-" + secrets.token_hex(8))
    await model.start()
    yield model
    await model.close()


@pytest.fixture
async def rig(tmp_path: Path, fake: FakeModel) -> AsyncIterator[Rig]:
    assert fake.api_key is not None
    async with serve_proxy(tmp_path, fake, fake.url, fake.api_key) as r:
        yield r


async def in_thread(fn: Callable[[], T]) -> T:
    """The SDK is synchronous: run it off the loop that serves the proxy, with a deadline."""
    async with asyncio.timeout(15):
        return await asyncio.to_thread(fn)


def ask(words: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": words}],
    }


def assert_only_the_real_key_went_upstream(rig: Rig) -> None:
    assert rig.fake.headers, "nothing reached the upstream"
    for headers in rig.fake.headers:
        assert headers["x-api-key"] == rig.key
        assert "authorization" not in headers
        assert all(AGENT_KEY not in value for value in headers.values())


# -- answers -----------------------------------------------------------------------------------


async def test_non_streaming_answer_reaches_the_sdk(rig: Rig) -> None:
    message = await in_thread(lambda: rig.client().messages.create(**ask("hello proxy")))
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hello proxy"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert_only_the_real_key_went_upstream(rig)


async def test_non_streaming_tool_use_reaches_the_sdk(rig: Rig) -> None:
    message = await in_thread(lambda: rig.client().messages.create(**ask("run: ls -la")))
    assert message.stop_reason == "tool_use"
    [tool] = [b for b in message.content if b.type == "tool_use"]
    assert tool.name == "shell"
    assert tool.input == {"command": "ls -la"}


async def test_streamed_answer_reaches_the_sdk(rig: Rig) -> None:
    words = "a streamed answer long enough to need several text deltas"

    def stream() -> tuple[list[str], anthropic.types.Message]:
        with rig.client().messages.stream(**ask(words)) as events:
            pieces = list(events.text_stream)
            return pieces, events.get_final_message()

    pieces, final = await in_thread(stream)
    assert len(pieces) > 1  # relayed as deltas, not as one blob
    assert "".join(pieces) == f"echo: {words}"
    assert final.content[0].type == "text"
    assert final.content[0].text == f"echo: {words}"
    assert rig.fake.requests[-1]["stream"] is True
    assert_only_the_real_key_went_upstream(rig)


async def test_streamed_tool_use_reaches_the_sdk(rig: Rig) -> None:
    def stream() -> anthropic.types.Message:
        with rig.client().messages.stream(**ask("run: echo hi")) as events:
            return events.get_final_message()

    final = await in_thread(stream)
    assert final.stop_reason == "tool_use"
    [tool] = [b for b in final.content if b.type == "tool_use"]
    assert (tool.name, tool.input) == ("shell", {"command": "echo hi"})


async def test_create_with_stream_true_yields_raw_events(rig: Rig) -> None:
    def events() -> list[Any]:
        return list(rig.client().messages.create(**ask("raw events"), stream=True))

    received = await in_thread(events)
    kinds = [e.type for e in received]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    text = "".join(
        e.delta.text
        for e in received
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "echo: raw events"


# -- the key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra_headers",
    [
        pytest.param({}, id="sdk_default_x_api_key"),
        pytest.param({"authorization": "Bearer " + AGENT_KEY}, id="authorization_header"),
        pytest.param({"x-api-key": AGENT_KEY + "-2"}, id="explicit_x_api_key"),
    ],
)
async def test_agent_credentials_are_never_forwarded(
    rig: Rig, extra_headers: dict[str, str]
) -> None:
    message = await in_thread(
        lambda: rig.client().messages.create(**ask("hi"), extra_headers=extra_headers)
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hi"
    assert_only_the_real_key_went_upstream(rig)
    assert all(AGENT_KEY + "-2" not in v for h in rig.fake.headers for v in h.values())


# -- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "sse"])
async def test_usage_is_reported_for_each_call(rig: Rig, streaming: bool) -> None:
    def call() -> None:
        client = rig.client()
        if streaming:
            with client.messages.stream(**ask("count me")) as events:
                events.until_done()
        else:
            client.messages.create(**ask("count me"))

    await in_thread(call)
    # the proxy reports after relaying the last byte
    await until(lambda: rig.usage, what="the call's usage reported")
    [(agent, model, input_tokens, output_tokens)] = rig.usage
    assert (agent, model) == ("a1", MODEL)
    assert input_tokens > 0
    assert output_tokens > 0


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        pytest.param(429, anthropic.RateLimitError, id="429_rate_limit"),
        pytest.param(500, anthropic.InternalServerError, id="500_internal"),
        pytest.param(529, anthropic.OverloadedError, id="529_overloaded"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["json", "sse"])
async def test_upstream_error_status_reaches_the_sdk_as_its_exception(
    rig: Rig, status: int, exception: type[anthropic.APIStatusError], streaming: bool
) -> None:
    rig.fake.failures = [status]

    def call() -> None:
        client = rig.client()
        if streaming:
            with client.messages.stream(**ask("hi")) as events:
                events.until_done()
        else:
            client.messages.create(**ask("hi"))

    with pytest.raises(exception) as info:
        await in_thread(call)
    assert info.value.status_code == status
    assert "injected failure" in str(info.value)
    assert rig.usage == []


async def test_sdk_retry_after_an_upstream_error_succeeds(rig: Rig) -> None:
    rig.fake.failures = [529]
    client = rig.client(max_retries=1)
    message = await in_thread(lambda: client.messages.create(**ask("second time lucky")))
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: second time lucky"
    assert len(rig.fake.requests) == 2


async def test_wrong_real_key_is_an_authentication_error(tmp_path: Path, fake: FakeModel) -> None:
    async with serve_proxy(tmp_path, fake, fake.url, "sk-ant-wrong") as rig:
        with pytest.raises(anthropic.AuthenticationError):
            await in_thread(lambda: rig.client().messages.create(**ask("hi")))


async def test_unreachable_upstream_is_a_502_not_a_hang(tmp_path: Path, fake: FakeModel) -> None:
    await fake.close()  # nothing listens on its port any more
    async with serve_proxy(tmp_path, fake, fake.url, "sk-ant-real") as rig:
        with pytest.raises(anthropic.APIStatusError) as info:
            await in_thread(lambda: rig.client().messages.create(**ask("anyone there?")))
    assert info.value.status_code == 502
    assert isinstance(info.value, anthropic.InternalServerError)
    assert "model upstream unreachable" in str(info.value)


async def test_body_that_is_not_json_is_a_400(rig: Rig) -> None:
    def post() -> httpx2.Response:
        transport = httpx2.HTTPTransport(uds=str(rig.socket_path))
        with httpx2.Client(transport=transport) as client:
            return client.post(
                "http://agent/v1/messages",
                content=b"not json",
                headers={"content-type": "application/json"},
            )

    response = await in_thread(post)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert rig.fake.requests == []


# -- one agent cannot slow another -------------------------------------------------------------


async def test_calls_past_an_agents_cap_wait_then_get_429_while_another_agent_goes_through(
    tmp_path: Path, fake: FakeModel
) -> None:
    assert fake.api_key is not None
    fake.delay = 1.0  # every call "thinks" for a second
    upstream = aiohttp.ClientSession()

    async def no_usage(charge: Charge) -> None:
        pass

    proxy = ModelProxy(
        upstream, fake.url, fake.api_key, no_usage, calls_allowed=lambda agent: 2, slot_wait=0.3
    )
    sessions = [AgentSession(name, tmp_path / name, proxy) for name in ("alice", "bob")]
    for session in sessions:
        await session.start()
    alice, bob = (Rig(fake, fake.api_key, s.socket_path) for s in sessions)

    def timed_call(rig: Rig) -> tuple[str, float]:
        started = time.monotonic()
        try:
            rig.client().messages.create(**ask("hi"))
            outcome = "answered"
        except anthropic.RateLimitError as exc:
            assert exc.response.headers["retry-after"] == "1"
            outcome = "429"
        return outcome, time.monotonic() - started

    try:
        async with asyncio.timeout(15):
            alices = [asyncio.to_thread(timed_call, alice) for _ in range(3)]
            alice_results = asyncio.gather(*alices)
            # alice's two slots are taken (both calls reached the upstream), her third waits
            await until(lambda: len(fake.requests) >= 2, what="alice's two calls upstream")
            bob_outcome, bob_seconds = await asyncio.to_thread(timed_call, bob)
            outcomes = await alice_results
    finally:
        for session in sessions:
            await session.close()
        await upstream.close()
    assert sorted(o for o, _ in outcomes) == ["429", "answered", "answered"]
    refused_after = next(s for o, s in outcomes if o == "429")
    assert 0.25 < refused_after < 0.9  # it waited briefly for a slot, then was told to retry
    assert bob_outcome == "answered"
    assert bob_seconds < 1.6  # one call's thinking: bob never queued behind alice


async def test_usage_is_recorded_when_the_agent_hangs_up_mid_stream(tmp_path: Path) -> None:
    finish = asyncio.Event()

    async def stream() -> AsyncIterator[bytes]:
        start = {"type": "message_start", "message": {"usage": {"input_tokens": 321}}}
        yield f"event: message_start\ndata: {json.dumps(start)}\n\n".encode()
        await finish.wait()  # the rest never comes before the agent gives up
        yield b"event: message_stop\ndata: {}\n\n"

    async def upstream_answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        async for chunk in stream():
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", upstream_answer)
    runner, url = await serve_on_loopback(app)
    usage: list[tuple[str, str, int, int]] = []

    async def record(charge: Charge) -> None:
        usage.append((charge.agent_id, charge.model, charge.input_tokens, charge.output_tokens))

    upstream = aiohttp.ClientSession()
    session = AgentSession("a1", tmp_path / "s", ModelProxy(upstream, url, "k", record))
    await session.start()
    try:
        transport = httpx.AsyncHTTPTransport(uds=str(session.socket_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as agent:
            request = {**ask("hi"), "stream": True}
            async with agent.stream("POST", "/v1/messages", json=request) as response:
                async for _ in response.aiter_raw():
                    break  # the first event arrived: hang up
        await until(lambda: usage, timeout=5, what="the hung-up call's usage recorded")
    finally:
        finish.set()
        await session.close()
        await upstream.close()
        await runner.cleanup()
    # the output was never counted: the call is charged what it reserved (max_tokens 64)
    assert usage == [("a1", MODEL, 321, 64)]
