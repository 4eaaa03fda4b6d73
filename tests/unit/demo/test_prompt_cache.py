"""The fake model's prompt cache accounts as the API does: by prefix, per breakpoint."""

from __future__ import annotations

from typing import Any

from clawpen.demo.prompt_cache import PromptCache

MARK = {"type": "ephemeral"}


def body(turns: int, marked: bool = True) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for n in range(turns):
        messages.append({"role": "user", "content": [{"type": "text", "text": f"q{n} " * 200}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"a{n} " * 50}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": f"q{turns} " * 200}]})
    if marked:
        messages[-1]["content"][-1]["cache_control"] = MARK
    system = [{"type": "text", "text": "S" * 5000, **({"cache_control": MARK} if marked else {})}]
    return {"system": system, "messages": messages}


def test_without_breakpoints_everything_is_input() -> None:
    cache = PromptCache()
    first, again = cache.account(body(3, False)), cache.account(body(3, False))
    assert first == again
    assert first["cache_read_input_tokens"] == first["cache_creation_input_tokens"] == 0


def test_a_growing_conversation_reads_its_prefix_and_writes_only_the_new_part() -> None:
    cache = PromptCache()
    first = cache.account(body(1))
    assert first["cache_read_input_tokens"] == 0
    assert first["input_tokens"] == 0  # nothing after the last breakpoint
    whole_first = first["cache_creation_input_tokens"]
    second = cache.account(body(2))
    assert second["cache_read_input_tokens"] == whole_first  # the whole first request
    assert 0 < second["cache_creation_input_tokens"] < 500  # one answer and the new question


def test_the_cache_expires_after_five_minutes_unless_read() -> None:
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    cache.account(body(1))
    now[0] = 299.0
    assert cache.account(body(1))["cache_read_input_tokens"] > 0  # and refreshed
    now[0] = 598.0
    assert cache.account(body(1))["cache_read_input_tokens"] > 0
    now[0] = 899.0
    assert cache.account(body(1))["cache_read_input_tokens"] == 0


def test_prefixes_shorter_than_the_minimum_are_not_cached() -> None:
    cache = PromptCache()
    small = {"system": [{"type": "text", "text": "short", "cache_control": MARK}], "messages": []}
    cache.account(small)
    again = cache.account(small)
    assert again["input_tokens"] > 0
    assert again["cache_creation_input_tokens"] == again["cache_read_input_tokens"] == 0


def test_a_changed_system_prompt_misses() -> None:
    cache = PromptCache()
    cache.account(body(1))
    changed = body(1)
    changed["system"][0]["text"] = "T" * 5000
    assert cache.account(changed)["cache_read_input_tokens"] == 0
