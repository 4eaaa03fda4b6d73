"""Compaction: near the model's context limit, older turns become a summary the model writes.

``split`` (pure) picks the cut: the recent turns that fit in a quarter of the context stay as
they are (at least the last whole turn); everything before becomes a transcript the model is
asked to summarise, together with the previous summary. The transcript is plain text, so tool
calls and their results need no pairing. Should the summary call fail, the old turns are
dropped with a note instead: the conversation goes on either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .session import Conversation

SUMMARISE_MARKER = "[clawpen:summarise]"  # the fake model answers requests carrying it
COMPACT_AT = 0.5  # of the context window: history above this is compacted before the turn
KEEP = 0.25  # of the context window: recent turns kept verbatim
MAX_BLOCK_CHARS = 2_000  # of one block in the transcript
SUMMARY_MAX_TOKENS = 2_048

SUMMARISE_SYSTEM = (
    f"{SUMMARISE_MARKER} You compact a chat assistant's conversation. Write a summary that lets "
    "the assistant carry on as if it remembered everything: who the user is, what they asked "
    "for, decisions made, facts learned, files created, open questions and promises. Be "
    "specific (names, numbers, paths); leave out pleasantries. Plain text, at most 600 words."
)

ModelCall = Callable[[dict[str, Any]], dict[str, Any]]


def needs_compaction(state: Conversation, context_tokens: int) -> bool:
    return state.estimated_tokens() > context_tokens * COMPACT_AT


def _tokens(messages: list[dict[str, Any]]) -> int:
    return len(json.dumps(messages, ensure_ascii=False)) // 4


def split(
    messages: list[dict[str, Any]], keep_tokens: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(old, recent): ``recent`` starts at a plain user turn and is the longest such suffix
    within ``keep_tokens`` (the last turn at least, whatever its size); ``old`` may be empty.

    >>> u = lambda t: {"role": "user", "content": t}
    >>> a = lambda t: {"role": "assistant", "content": [{"type": "text", "text": t}]}
    >>> old, recent = split([u("q1"), a("a1"), u("q2"), a("a2")], keep_tokens=20)
    >>> [m["content"] for m in old], recent[0]["content"]
    (['q1', [{'type': 'text', 'text': 'a1'}]], 'q2')
    """
    starts = [
        i for i, m in enumerate(messages) if m["role"] == "user" and isinstance(m["content"], str)
    ]
    if not starts:
        return [], messages
    cut = starts[-1]
    for start in reversed(starts[:-1]):
        if _tokens(messages[start:]) > keep_tokens:
            break
        cut = start
    return messages[:cut], messages[cut:]


def transcript(messages: list[dict[str, Any]]) -> str:
    """The turns as text, each block clipped: what the summariser reads."""
    lines = []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                body = str(block.get("text", ""))
            elif kind == "tool_use":
                body = f"[calls {block.get('name')} {json.dumps(block.get('input'))}]"
            elif kind == "tool_result":
                inner = block.get("content", "")
                body = f"[tool result] {inner if isinstance(inner, str) else json.dumps(inner)}"
            else:
                body = f"[{kind}]"
            lines.append(f"{message['role']}: {body[:MAX_BLOCK_CHARS]}")
    return "\n".join(lines)


def summarise_request(model: str, summary: str, old: list[dict[str, Any]]) -> dict[str, Any]:
    earlier = f"Summary of what came before:\n{summary}\n\n" if summary else ""
    return {
        "model": model,
        "max_tokens": SUMMARY_MAX_TOKENS,
        "system": SUMMARISE_SYSTEM,
        "messages": [
            {
                "role": "user",
                "content": f"{SUMMARISE_MARKER}\n{earlier}The conversation to summarise:\n"
                f"{transcript(old)}",
            }
        ],
    }


def compact(
    state: Conversation, context_tokens: int, model: str, call_model: ModelCall
) -> tuple[Conversation, str]:
    """The conversation with its older turns folded into the summary, and what happened
    (``compacted``, ``dropped`` when the summary call failed, or ``nothing`` to fold)."""
    old, recent = split(state.messages, int(context_tokens * KEEP))
    if not old:
        return state, "nothing"
    try:
        answer = call_model(summarise_request(model, state.summary, old))
        text = "".join(
            b.get("text", "") for b in answer.get("content", []) if b.get("type") == "text"
        ).strip()
    except Exception:  # whatever failed, drop instead: the chat must go on
        text = ""
    if text:
        return Conversation(state.session, text, recent, 0), "compacted"
    note = (state.summary + "\n" if state.summary else "") + (
        f"({len(old)} earlier messages were dropped: the summary could not be made)"
    )
    return Conversation(state.session, note, recent, 0), "dropped"
