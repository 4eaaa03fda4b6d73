"""Prompt caching as the Anthropic API accounts it, for the fake model.

A request is a sequence of blocks: the tools, then the system prompt, then each message's
content blocks. A block carrying ``cache_control`` is a breakpoint: the prefix up to it is
written to the cache (when it is at least ``min_tokens`` long) and kept for ``ttl`` seconds,
refreshed on every hit. A later request reads the longest cached prefix that ends at one of its
block boundaries, looking back at most 20 blocks before each of its breakpoints. Usage then
splits the prompt in three: ``cache_read_input_tokens`` (the hit),
``cache_creation_input_tokens`` (from the hit to the last cacheable breakpoint) and
``input_tokens`` (the rest, after the last breakpoint). Tokens are counted as 4 characters of
the block's JSON, without its ``cache_control``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOOKBACK = 20


def blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """(canonical text, is a breakpoint) for each block of the prompt, in cache order."""
    out: list[tuple[str, bool]] = []

    def add(kind: str, block: Any) -> None:
        marked = isinstance(block, dict) and "cache_control" in block
        if marked:
            block = {k: v for k, v in block.items() if k != "cache_control"}
        out.append((kind + json.dumps(block, sort_keys=True, ensure_ascii=False), marked))

    for tool in body.get("tools") or []:
        add("tool:", tool)
    system = body.get("system")
    if isinstance(system, str) and system:
        add("system:", {"type": "text", "text": system})
    elif isinstance(system, list):
        for block in system:
            add("system:", block)
    for message in body.get("messages") or []:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for index, block in enumerate(parts or []):
            add(f"{message.get('role')}{'+' if index else '|'}:", block)
    return out


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class PromptCache:
    ttl: float = 300.0
    min_tokens: int = 1024
    clock: Callable[[], float] = time.monotonic
    entries: dict[str, float] = field(default_factory=dict)  # prefix hash -> expires at

    def account(self, body: dict[str, Any]) -> dict[str, int]:
        """The input side of ``usage`` for this request; updates the cache as the API would."""
        now = self.clock()
        found = blocks(body)
        hashes, sums = [], []
        digest, total = hashlib.sha256(), 0
        for text, _ in found:
            digest.update(text.encode())
            hashes.append(digest.copy().hexdigest())
            total += tokens(text)
            sums.append(total)
        marks = [i for i, (_, marked) in enumerate(found) if marked]
        hit = -1
        for mark in marks:
            for position in range(mark, max(-1, mark - LOOKBACK - 1), -1):
                if self.entries.get(hashes[position], 0) > now:
                    hit = max(hit, position)
                    break
        read = sums[hit] if hit >= 0 else 0
        if hit >= 0:
            self.entries[hashes[hit]] = now + self.ttl
        written = 0
        for mark in marks:
            if sums[mark] >= self.min_tokens and mark > hit:
                self.entries[hashes[mark]] = now + self.ttl
                written = sums[mark] - read
        return {
            "input_tokens": total - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }
