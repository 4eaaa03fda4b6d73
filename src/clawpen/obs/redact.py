"""Known secret values, and the step that takes them out of text.

Whatever this process learns as a credential (a vault read, the model key, a channel token,
an ``env:`` value at a credential key) is added here; every log line (``logging.py``) and every
reply to a chat (``core/text.py``) passes through ``SECRETS`` before it leaves. An agent that
somehow got a key and echoes it, or an exception that quotes a header, then shows
``[redacted]`` instead.

    >>> r = Redactor(); r.add("sk-ant-0123456789")
    >>> r("key=sk-ant-0123456789")
    'key=[redacted]'
"""

from __future__ import annotations

import json
import re

MIN_LENGTH = 8  # shorter values ("1", "test") would blank out ordinary words
MASK = "[redacted]"


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < MIN_LENGTH or value in self._values:
            return
        self._values.add(value)
        forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
        self._values |= forms
        longest_first = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in longest_first))

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def __len__(self) -> int:
        return len(self._values)


SECRETS = Redactor()  # this process's: the log chain and the reply path share it
