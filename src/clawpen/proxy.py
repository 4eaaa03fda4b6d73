"""The model proxy: an Anthropic-compatible endpoint on each agent's socket.

The agent sends requests without a key; the proxy drops whatever auth headers came in, adds the
real key and forwards to ``model.base_url`` through an injected ``httpx.AsyncClient`` (tests pass
one with a mock or a loopback fake). Responses, SSE streams included, are relayed chunk by chunk
as they arrive, and token usage is read off the way through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import httpx
from aiohttp import web

from .logging import get_logger

MAX_REQUEST_BYTES = 20 * 1024 * 1024
FORWARDED_HEADERS = ("content-type", "anthropic-version", "anthropic-beta", "accept")
UsageSink = Callable[[str, str, int, int], Awaitable[None]]  # agent, model, input, output tokens
Admission = Callable[[str, str], Awaitable[str | None]]  # agent, model -> why it may not call


def api_error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


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
        usage = event.get("usage") or (event.get("message") or {}).get("usage") or {}
        self.input_tokens = max(self.input_tokens, int(usage.get("input_tokens") or 0))
        self.output_tokens = max(self.output_tokens, int(usage.get("output_tokens") or 0))


class ModelProxy:
    def __init__(
        self,
        upstream: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        on_usage: UsageSink,
        admit: Admission | None = None,
    ) -> None:
        self.upstream = upstream
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.on_usage = on_usage
        self.admit = admit
        self.log = get_logger()

    async def handle(self, agent_id: str, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if len(body) > MAX_REQUEST_BYTES:
            return api_error(413, "request_too_large", "request body over 20 MB")
        try:
            payload = json.loads(body)
        except ValueError:
            return api_error(400, "invalid_request_error", "body is not JSON")
        model = str(payload.get("model", "")) if isinstance(payload, dict) else ""
        refusal = None if self.admit is None else await self.admit(agent_id, model)
        if refusal is not None:
            self.log.warning("model_call_refused", agentId=agent_id, reason=refusal)
            return api_error(403, "permission_error", refusal)  # not retried: it will not pass
        streaming = bool(isinstance(payload, dict) and payload.get("stream"))
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        headers.setdefault("anthropic-version", "2023-06-01")
        headers["x-api-key"] = self.api_key
        headers["accept-encoding"] = "identity"  # relay bytes as they are, never re-encoded
        url = self.base_url + request.path_qs
        started = time.perf_counter()
        tap = UsageTap(streaming)
        try:
            upstream_request = self.upstream.build_request(
                "POST", url, content=body, headers=headers
            )
            upstream = await self.upstream.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            self.log.warning("model_call_failed", agentId=agent_id, error=str(exc) or repr(exc))
            return api_error(502, "api_error", f"model upstream unreachable: {type(exc).__name__}")
        try:
            response = web.StreamResponse(status=upstream.status_code)
            response.content_type = upstream.headers.get("content-type", "application/json").split(
                ";"
            )[0]
            for name in ("request-id", "retry-after", "anthropic-ratelimit-requests-remaining"):
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            async for chunk in upstream.aiter_raw():
                tap.feed(chunk)
                await response.write(chunk)
            await response.write_eof()
        finally:
            await upstream.aclose()
        tap.close()
        if tap.input_tokens or tap.output_tokens:
            await self.on_usage(agent_id, model, tap.input_tokens, tap.output_tokens)
        self.log.info(
            "model_call",
            agentId=agent_id,
            model=model,
            status=upstream.status_code,
            stream=streaming,
            inputTokens=tap.input_tokens,
            outputTokens=tap.output_tokens,
            duration=round(time.perf_counter() - started, 4),
        )
        return response
