"""What of an agent's Messages API request may go upstream: pure, no I/O.

A networkless agent must not get the provider's servers to reach out for it, and a compromised
one must not pick its own price. So the proxy forwards only the fields it knows; server-side
tools (web search, web fetch, code execution), ``mcp_servers``, ``container``, images and
documents fetched from a URL, and ``anthropic-beta`` values pass only where the agent's config
enables them; ``max_tokens`` is clamped; the model must be one the agent may use.

    >>> policy = AgentPolicy(models=("claude-x",), max_tokens=100)
    >>> decision = decide({"model": "claude-x", "max_tokens": 10**9, "messages": [],
    ...                    "mcp_servers": [{"url": "https://evil"}]}, policy)
    >>> decision.body["max_tokens"], decision.dropped
    (100, ['mcp_servers'])
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
    }
)
# request fields that make the provider act for the agent: dropped unless enabled, by this name
GATED_FIELDS = {"mcp_servers": "mcp_servers", "container": "code_execution"}
SERVER_TOOLS = frozenset({"web_search", "web_fetch", "code_execution"})
IMAGE_TOKENS = 1600  # the most an image costs after the API resizes it
_VERSIONED = re.compile(r"_\d{8}$")  # web_search_20250305 -> web_search


@dataclass(frozen=True)
class AgentPolicy:
    models: tuple[str, ...]
    max_tokens: int
    server_tools: frozenset[str] = frozenset()
    beta_headers: frozenset[str] = frozenset()
    extra_fields: frozenset[str] = frozenset()  # beyond KNOWN_FIELDS (an engine's own)


@dataclass
class Decision:
    """``refusal`` set: answer the agent with it (``status``); else send ``body``."""

    body: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    refusal: str | None = None
    status: int = 400


def decide(payload: dict[str, Any], policy: AgentPolicy) -> Decision:
    model = payload.get("model")
    if model not in policy.models:
        allowed = ", ".join(policy.models)
        return Decision(
            refusal=f"model {model!r} is not allowed here (allowed: {allowed})", status=403
        )
    max_tokens = payload.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return Decision(refusal="max_tokens must be a positive integer")
    if "url_sources" not in policy.server_tools and _has_url_source(payload.get("messages")):
        return Decision(
            refusal="images and documents from a URL are not allowed here (the provider would"
            " fetch them for a networkless agent); send them as base64",
            status=403,
        )
    body: dict[str, Any] = {}
    dropped: list[str] = []
    passing = KNOWN_FIELDS | policy.extra_fields
    for key, value in payload.items():
        if key in passing or GATED_FIELDS.get(key) in policy.server_tools:
            body[key] = value
        else:
            dropped.append(key)
    body["max_tokens"] = min(max_tokens, policy.max_tokens)
    if isinstance(body.get("tools"), list):
        kept = []
        for tool in body["tools"]:
            kind = _tool_kind(tool)
            if kind is None or kind in policy.server_tools:
                kept.append(tool)
            else:
                dropped.append(f"tools.{kind}")
        body["tools"] = kept
        names = {t.get("name") for t in kept if isinstance(t, dict)}
        choice = body.get("tool_choice")
        if (
            isinstance(choice, dict)
            and choice.get("type") == "tool"
            and choice.get("name") not in names
        ):
            del body["tool_choice"]
            dropped.append("tool_choice")
        if not kept:
            del body["tools"]
            body.pop("tool_choice", None)
    return Decision(body=body, dropped=dropped)


# What the claude-code engine's CLI sends beyond the plain Messages API (with its experimental
# betas switched off): none of it makes the provider act for the agent or reach the network.
CLAUDE_CODE_BETAS = frozenset(
    {
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
        "effort-2025-11-24",
    }
)
CLAUDE_CODE_FIELDS = frozenset({"context_management", "output_config"})


def beta_header(value: str | None, policy: AgentPolicy) -> str | None:
    """The ``anthropic-beta`` values the agent may send (betas can switch on server features)."""
    if not value:
        return None
    kept = [v.strip() for v in value.split(",") if v.strip() in policy.beta_headers]
    return ",".join(kept) or None


def _tool_kind(tool: Any) -> str | None:
    """None for a tool the agent runs itself (custom); else what the provider would run."""
    if not isinstance(tool, dict):
        return "malformed"
    kind = tool.get("type")
    if kind is None or kind == "custom":
        return None
    return _VERSIONED.sub("", str(kind))


def _has_url_source(value: Any) -> bool:
    if isinstance(value, dict):
        source = value.get("source")
        if isinstance(source, dict) and source.get("type") == "url":
            return True
        return any(_has_url_source(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_url_source(v) for v in value)
    return False


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """An upper estimate of a request's input tokens, before it is sent: half a token per byte
    of its JSON (real text runs 3 to 4 bytes a token), with base64 images at their most and
    documents by size. What the budget reserves; the real count settles it."""
    images = 0
    extra = 0

    def strip(value: Any) -> Any:
        nonlocal images, extra
        if isinstance(value, dict):
            source = value.get("source")
            if isinstance(source, dict) and source.get("type") == "base64":
                data = str(source.get("data", ""))
                if value.get("type") == "image":
                    images += 1
                else:
                    extra += (
                        len(data) // 4
                        if "text" in str(source.get("media_type"))
                        else len(data) // 20
                    )
                return {k: v for k, v in value.items() if k != "source"}
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    rest = {k: strip(v) for k, v in body.items() if k != "max_tokens"}
    size = len(json.dumps(rest, ensure_ascii=False).encode())
    return size // 2 + images * IMAGE_TOKENS + extra
