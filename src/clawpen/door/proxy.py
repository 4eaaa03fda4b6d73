"""The model proxy: an Anthropic-compatible endpoint on each agent's socket.

The agent sends requests without a key; the proxy drops whatever auth headers came in, adds the
real key and forwards to ``model.base_url`` through an injected ``aiohttp.ClientSession`` (one
per agent, or one for all in tests; aiohttp spends about half a millisecond less CPU per call
than httpx here). Responses, SSE streams included, are relayed chunk by chunk as they arrive,
and token usage is read off the way through.

Each agent has at most ``calls_allowed(agent)`` calls in flight upstream; one more waits up to
``slot_wait`` seconds for a slot, then gets a 429 (the agent retries those). So one agent's slow
or numerous calls never make another agent's call wait. The body arrives read and parsed by the
door (``server.py``), under its caps.

Before a call goes out, ``modelrequest.decide`` keeps only what may go upstream (known fields,
allowed models and tools, a clamped ``max_tokens``) and ``budget.py`` reserves what it may
cost; after it, whatever happened (an answer, an error, the agent hanging up mid-stream), the
reservation is settled and the charge handed to ``on_usage``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from clawpen_agent.protocol import TOOL_CALLS_HEADER, ProtocolError, parse_tool_calls

from ..errors import ClawpenError
from ..obs.logging import get_logger
from ..obs.tracing import NO_TRACING, Tracing
from .budget import Budget, Charge, Reservation
from .caps import log_refusal
from .modelrequest import AgentPolicy, beta_header, decide, estimate_input_tokens

FORWARDED_HEADERS = ("content-type", "anthropic-version", "accept")
DEFAULT_MAX_MODEL_CALLS = 4
UsageSink = Callable[[Charge], Awaitable[None]]
PolicyFor = Callable[[str], AgentPolicy]  # agent id -> what it may send


def any_model(agent_id: str) -> AgentPolicy:
    """No policy (tests of the relay itself): every model, max_tokens up to the API's most."""
    return AgentPolicy(models=_Anything(), max_tokens=128_000)


class _Anything(tuple[str, ...]):
    def __contains__(self, item: object) -> bool:
        return True


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
    """Reads ``usage`` from a JSON body or from the SSE events of a stream, chunk by chunk.
    ``complete``: the final count was seen (a JSON body's, or a stream's ``message_delta``);
    until then the output is not known. Cache writes and reads count as input."""

    INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.buffer = b""
        self.inputs = dict.fromkeys(self.INPUT_FIELDS, 0)
        self.output_tokens = 0
        self.complete = False

    @property
    def input_tokens(self) -> int:
        return sum(self.inputs.values())

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
            for name in self.INPUT_FIELDS:
                self.inputs[name] = max(self.inputs[name], int(usage.get(name) or 0))
            self.output_tokens = max(self.output_tokens, int(usage.get("output_tokens") or 0))
        except (AttributeError, TypeError, ValueError):
            return
        if usage and (not self.streaming or event.get("type") == "message_delta"):
            self.complete = True


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
        policy: PolicyFor = any_model,
        budget: Budget | None = None,
        calls_allowed: Callable[[str], int] = lambda agent_id: DEFAULT_MAX_MODEL_CALLS,
        slot_wait: float = 2.0,
        write_timeout: float = 60.0,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.upstream_for: UpstreamFor = (
            (lambda agent_id: upstream) if isinstance(upstream, aiohttp.ClientSession) else upstream
        )
        self.base_url = base_url.rstrip("/")
        self.api_key: Callable[[], str] = (lambda: api_key) if isinstance(api_key, str) else api_key
        self.on_usage = on_usage
        self.policy = policy
        self.budget = budget or Budget()
        self.calls_allowed = calls_allowed
        self.slot_wait = slot_wait
        self.write_timeout = write_timeout  # an agent that stops reading frees its slot
        self.log = get_logger()
        self.tracing = tracing
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
        policy = self.policy(agent_id)
        decision = decide(payload, policy)
        if decision.refusal is not None:
            self.log.warning("model_call_refused", agentId=agent_id, reason=decision.refusal)
            kind = "permission_error" if decision.status == 403 else "invalid_request_error"
            return api_error(decision.status, kind, decision.refusal)  # not retried
        if decision.dropped:
            log_refusal(agent_id, "model_request_filtered", status=200, dropped=decision.dropped)
        outgoing = decision.body
        reservation = await self.budget.reserve(
            agent_id, model, estimate_input_tokens(outgoing), outgoing["max_tokens"]
        )
        if isinstance(reservation, str):
            self.log.warning("model_call_refused", agentId=agent_id, reason=reservation)
            return api_error(403, "permission_error", reservation)
        outgoing["max_tokens"] = reservation.max_tokens
        slots = self._slots.get(agent_id)
        if slots is None:
            slots = self._slots[agent_id] = asyncio.Semaphore(self.calls_allowed(agent_id))
        try:
            async with asyncio.timeout(self.slot_wait):
                await slots.acquire()
        except TimeoutError:
            self.budget.release(reservation)
            limit = self.calls_allowed(agent_id)
            log_refusal(agent_id, "too_many_model_calls", status=429, limit=limit)
            message = f"agent {agent_id} has {limit} model calls in flight; retry shortly"
            return api_error(429, "rate_limit_error", message, {"retry-after": "1"})
        except BaseException:
            self.budget.release(reservation)
            raise
        try:
            beta = beta_header(request.headers.get("anthropic-beta"), policy)
            traceparent = request.headers.get("traceparent", "")
            for name, began, ended in parse_tool_calls(request.headers.get(TOOL_CALLS_HEADER, "")):
                # the agent's tool calls since its last model call: spans of its task too
                self.tracing.record("tool." + name, began, ended, traceparent, agent_id)
            with self.tracing.span(
                "model.call",
                parent=traceparent,
                attributes={"clawpen.agent": agent_id, "gen_ai.request.model": model},
            ):
                return await self._forward(
                    agent_id, request, outgoing, beta, reservation, streaming
                )
        finally:
            slots.release()

    async def _forward(
        self,
        agent_id: str,
        request: web.Request,
        payload: dict[str, Any],
        beta: str | None,
        reservation: Reservation,
        streaming: bool,
    ) -> web.StreamResponse:
        """Send the call and relay its answer; the reservation is settled whatever happens."""
        model = reservation.model
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        headers["content-type"] = "application/json"
        headers.setdefault("anthropic-version", "2023-06-01")
        if beta:
            headers["anthropic-beta"] = beta
        try:
            headers["x-api-key"] = self.api_key()
        except ClawpenError as exc:  # the vault cannot give the key (removed, unreadable)
            self.budget.release(reservation)
            self.log.error("model_key_unavailable", agentId=agent_id, error=str(exc))
            return api_error(503, "api_error", "the model key is not available; see the log")
        headers["accept-encoding"] = "identity"  # relay bytes as they are, never re-encoded
        url = self.base_url + request.path_qs
        started = time.perf_counter()
        tap = UsageTap(streaming)
        session = self.upstream_for(agent_id)
        body = json.dumps(payload).encode()
        try:
            upstream = await session.post(
                url, data=body, headers=headers, timeout=UPSTREAM_TIMEOUT, auto_decompress=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.budget.release(reservation)  # it never reached the provider
            self.log.warning("model_call_failed", agentId=agent_id, error=str(exc) or repr(exc))
            return api_error(502, "api_error", f"model upstream unreachable: {type(exc).__name__}")
        except BaseException:
            self.budget.release(reservation)
            raise
        response = web.StreamResponse(status=upstream.status)
        content_type = upstream.headers.get("content-type", "application/json")
        response.content_type = content_type.split(";")[0]
        for name in ("request-id", "retry-after", "anthropic-ratelimit-requests-remaining"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        settled = False
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                tap.feed(chunk)
                async with asyncio.timeout(self.write_timeout):
                    await response.write(chunk)
            # charged before the agent sees the end of the answer: a warning it triggers then
            # goes with the reply of the task that made the call
            tap.close()
            settled = True
            await self._settle(reservation, upstream.status, tap)
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # Part of an answer was relayed: cut the connection, so the agent sees a broken
            # response (and retries) rather than one that looks complete.
            self.log.warning("model_call_cut", agentId=agent_id, cause=_cut_cause(exc))
            if request.transport is not None:
                request.transport.abort()
        finally:
            upstream.release()
            if not settled:
                tap.close()
                # Also when the agent hung up mid-stream: the tokens were spent all the same.
                await self._settle(reservation, upstream.status, tap)
        self.tracing.annotate(
            {
                "http.response.status_code": upstream.status,
                "gen_ai.usage.input_tokens": tap.input_tokens,
                "gen_ai.usage.output_tokens": tap.output_tokens,
            }
        )
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

    async def _settle(self, reservation: Reservation, status: int, tap: UsageTap) -> None:
        """An error answer costs nothing (the provider bills none); an answer whose usage was
        not seen to the end is charged at the reservation."""
        if status != 200 and not tap.complete:
            self.budget.release(reservation)
            return
        charge = self.budget.settle(reservation, tap.input_tokens, tap.output_tokens, tap.complete)
        try:
            # shielded: a cancelled call (the agent hung up) still gets its tokens counted
            await asyncio.shield(self.on_usage(charge))
        except Exception as exc:  # the call happened; losing its accounting must not fail it
            self.log.error("usage_unrecorded", agentId=reservation.agent_id, error=repr(exc))


def _cut_cause(exc: Exception) -> str:
    if isinstance(exc, aiohttp.ClientError):
        return f"upstream: {type(exc).__name__}"
    if isinstance(exc, TimeoutError):
        return "the agent stopped reading"
    return "the agent hung up"
