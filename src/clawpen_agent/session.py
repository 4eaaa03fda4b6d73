"""One conversation per chat, kept in /workspace and resumed after any restart.

A conversation file holds the messages since the last compaction, the summary of what came
before them, the session number it belongs to and the size of its last prompt. The orchestrator
numbers sessions per chat (``/new`` starts the next one); a task that carries another number
than the file starts afresh, so a lost or repeated ``/new`` cannot mix two sessions. Files are
written atomically (``durable.write_atomic``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durable import read_json, write_json


@dataclass
class Conversation:
    session: int = 0
    summary: str = ""  # what the model wrote about the turns that were compacted away
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0  # the whole prompt of the last model call, as the API counted it

    def estimated_tokens(self) -> int:
        """The history's size in tokens, about 4 characters each; the measured prompt size
        when that is larger (it includes images, tools and the system prompt)."""
        chars = len(self.summary) + len(json.dumps(self.messages, ensure_ascii=False))
        return max(chars // 4, self.prompt_tokens)


class Sessions:
    """Conversation files under ``root/.clawpen/conversations``, one per chat."""

    def __init__(self, root: str) -> None:
        self.dir = Path(root) / ".clawpen" / "conversations"

    def path(self, conversation: str) -> Path:
        return self.dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", conversation) + ".json")

    def load(self, conversation: str, session: int = 0) -> Conversation:
        """The chat's conversation in ``session``; empty when there is none yet, when the file
        belongs to an earlier session, or when it cannot be read."""
        data = read_json(self.path(conversation))
        if isinstance(data, list):  # the format before sessions: messages only
            data = {"session": 0, "messages": data}
        if not isinstance(data, dict) or data.get("session", 0) != session:
            return Conversation(session=session)
        messages = data.get("messages")
        return Conversation(
            session=session,
            summary=str(data.get("summary") or ""),
            messages=messages if isinstance(messages, list) else [],
            prompt_tokens=int(data.get("prompt_tokens") or 0),
        )

    def save(self, conversation: str, state: Conversation) -> None:
        write_json(
            self.path(conversation),
            {
                "session": state.session,
                "summary": state.summary,
                "messages": state.messages,
                "prompt_tokens": state.prompt_tokens,
            },
        )
