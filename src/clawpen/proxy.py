"""The model proxy: an Anthropic-compatible endpoint on each agent's socket.

The agent sends requests without a key; the proxy drops whatever auth headers came in, adds the
real key and forwards to ``model.base_url`` through an injected ``aiohttp.ClientSession`` (one
per agent, or one for all in tests; aiohttp spends about half a millisecond less CPU per call
than httpx here). Responses, SSE streams included, are relayed chunk by chunk as they arrive,
and token usage is read off the way through.

Each agent has at most ``calls_allowed(agent)`` calls in flight upstream; one more waits up to
``slot_wait`` seconds for a slot, then gets a 429 (the agent retries those). So one agent's slow
or numerous calls never make another agent's call wait. The body arrives read and parsed by the
door (``agentapi.py``), under its caps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from clawpen_agent.protocol import ProtocolError

from .door import log_refusal
from .errors import ClawpenError
from .logging import get_logger

FORWARDED_HEADERS = ("content-type", "anthropic-version", "anthropic-beta", "accept")
DEFAULT_MAX_MODEL_CALLS = 4
# agent, model, input_tokens, output_tokens
UsageSink = Callable[[str, str, int, int], Awaitable[None]]
Admission = Callable[[str, str], Awaitable[str | None]]  # agent, model -> why it may not


async def admit_all(agent_id: str, model: str) -> str | None:
    return None


def requested_call(payload: Any) -> tuple[str, bool]:
    """``(model, stream)`` of a Messages API request body; raises ``ProtocolError``."""
    if not isinstance(payload, dict):
        raise ProtocolError("a Messages API request must be a JSON object")
    model = payload.get("model", "")
    if not isinstance(model, str):
        raise ProtocolError("model must be a string")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError("stream must be true or false")
    return model, stream


def api_error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers)


class UsageTap:
    """Reads ``usage`` from a JSON body or from the SSE events of a stream, chunk by chunk."""

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.buffer = b""
        self.input_tokens = 0
        self.output_tokens = 0

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        if not self.streaming:
            return
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self._take(line[5:])

    def close(self) -> None:
        if not self.streaming:
            self._take(self.buffer)

    def _take(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        try:  # the upstream is trusted, but a surprise in its answer must not fail the call
            usage = event.get("usage") or (event.get("message") or {}).get("usage") or {}
            self.input_tokens = max(self.input_tokens, int(usage.get("input_tokens") or 0))
            self.output_tokens = max(self.output_tokens, int(usage.get("output_tokens") or 0))
        except (AttributeError, TypeError, ValueError):
            return


UpstreamFor = Callable[[str], aiohttp.ClientSession]  # agent id -> the session for its calls
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)


class ModelProxy:
    """``upstream`` is one client for every agent (tests), or a client per agent: each pool
    then holds only that agent's few connections, so no agent's calls wait behind another's,
    and a request does not scan every agent's connections for a free one."""

    def __init__(
        self,
        upstream: aiohttp.ClientSession | UpstreamFor,
        base_url: str,
        api_key: str | Callable[[], str],
        on_usage: UsageSink,
        admit: Admission = admit_all,
        calls_allowed: Callable[[str], int] = lambda agent_id: DEFAULT_MAX_MODEL_CALLS,
        slot_wait: float = 2.0,
        write_timeout: float = 60.0,
    ) -> None:
        self.upstream_for: UpstreamFor = (
            (lambda agent_id: upstream) if isinstance(upstream, aiohttp.ClientSession) else upstream
        )
        self.base_url = base_url.rstrip("/")
        self.api_key: Callable[[], str] = (lambda: api_key) if isinstance(api_key, str) else api_key
        self.on_usage = on_usage
        self.admit = admit
        self.calls_allowed = calls_allowed
        self.slot_wait = slot_wait
        self.write_timeout = write_timeout  # an agent that stops reading frees its slot
        self.log = get_logger()
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def handle(
        self, agent_id: str, request: web.Request, body: bytes, payload: Any
    ) -> web.StreamResponse:
        """Forward one call; ``body`` is the request as read by the door, ``payload`` parsed."""
        try:
            model, streaming = requested_call(payload)
        except ProtocolError as exc:
            log_refusal(agent_id, "invalid_model_request", status=400, error=str(exc))
            return api_error(400, "invalid_request_error", str(exc))
        refusal = await self.admit(agent_id, model)
        if refusal is not None:
            self.log.warning("model_call_refused", agentId=agent_id, reason=refusal)
            return api_error(403, "permission_error", refusal)  # not retried: it will not pass
        slots = self._slots.get(agent_id)
        if slots is None:
            slots = self._slots[agent_id] = asyncio.Semaphore(self.calls_allowed(agent_id))
        try:
            async with asyncio.timeout(self.slot_wait):
                await slots.acquire()
        except TimeoutError:
            limit = self.calls_allowed(agent_id)
            log_refusal(agent_id, "too_many_model_calls", status=429, limit=limit)
            message = f"agent {agent_id} has {limit} model calls in flight; retry shortly"
            return api_error(429, "rate_limit_error", message, {"retry-after": "1"})
        try:
            return await self._forward(agent_id, request, body, model, streaming)
        finally:
            slots.release()

    async def _forward(
        self, agent_id: str, request: web.Request, body: bytes, model: str, streaming: bool
    ) -> web.StreamResponse:
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        headers.setdefault("anthropic-version", "2023-06-01")
        try:
            headers["x-api-key"] = self.api_key()
        except ClawpenError as exc:  # the vault cannot give the key (removed, unreadable)
            self.log.error("model_key_unavailable", agentId=agent_id, error=str(exc))
            return api_error(503, "api_error", "the model key is not available; see the log")
        headers["accept-encoding"] = "identity"  # relay bytes as they are, never re-encoded
        url = self.base_url + request.path_qs
        started = time.perf_counter()
        tap = UsageTap(streaming)
        session = self.upstream_for(agent_id)
        try:
            upstream = await session.post(
                url, data=body, headers=headers, timeout=UPSTREAM_TIMEOUT, auto_decompress=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("model_call_failed", agentId=agent_id, error=str(exc) or repr(exc))
            return api_error(502, "api_error", f"model upstream unreachable: {type(exc).__name__}")
        response = web.StreamResponse(status=upstream.status)
        content_type = upstream.headers.get("content-type", "application/json")
        response.content_type = content_type.split(";")[0]
        for name in ("request-id", "retry-after", "anthropic-ratelimit-requests-remaining"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                tap.feed(chunk)
                async with asyncio.timeout(self.write_timeout):
                    await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # Part of an answer was relayed: cut the connection, so the agent sees a broken
            # response (and retries) rather than one that looks complete.
            self.log.warning("model_call_cut", agentId=agent_id, cause=_cut_cause(exc))
            if request.transport is not None:
                request.transport.abort()
        finally:
            upstream.release()
            tap.close()
            # Also when the agent hung up mid-stream: the tokens were spent all the same.
            await self._record_usage(agent_id, model, tap)
        self.log.info(
            "model_call",
            agentId=agent_id,
            model=model,
            status=upstream.status,
            stream=streaming,
            inputTokens=tap.input_tokens,
            outputTokens=tap.output_tokens,
            duration=round(time.perf_counter() - started, 4),
        )
        return response

    async def _record_usage(self, agent_id: str, model: str, tap: UsageTap) -> None:
        if not (tap.input_tokens or tap.output_tokens):
            return
        try:
            # shielded: a cancelled call (the agent hung up) still gets its tokens counted
            usage = self.on_usage(agent_id, model, tap.input_tokens, tap.output_tokens)
            await asyncio.shield(usage)
        except Exception as exc:  # the call happened; losing its accounting must not fail it
            self.log.error("usage_unrecorded", agentId=agent_id, error=repr(exc))


def _cut_cause(exc: Exception) -> str:
    if isinstance(exc, aiohttp.ClientError):
        return f"upstream: {type(exc).__name__}"
    if isinstance(exc, TimeoutError):
        return "the agent stopped reading"
    return "the agent hung up"
