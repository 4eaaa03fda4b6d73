"""Pairing by code: a stranger asks, the owner approves with a code, the chat is paired.

With ``unknown_senders: code`` in a channel's block, the first message from an unknown chat is
answered with a short one-time code (and nothing else: it never reaches a model). The owner,
who has the machine, runs ``clawpen pair approve CODE --agent ID``; that pairs the chat. A code
lasts an hour, a chat gets at most one an hour (so a stranger cannot make us spam them or fill
the store), and the store keeps only its hash. Pure helpers; the store does the bookkeeping in
one transaction with the reply that carries the code.

    >>> normalize(" abcd-efgh ")
    'ABCDEFGH'
"""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by people
CODE_LENGTH = 8
CODE_TTL = 3600.0  # seconds a code can be approved
PER_CHAT_EVERY = 3600.0  # a chat gets at most one code in this long


def new_code() -> str:
    """``ABCD-EFGH``: 40 bits, one try per approval, expiring within the hour."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalize(code: str) -> str:
    return code.strip().upper().replace("-", "").replace(" ", "")


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


def code_message(code: str) -> str:
    """What the stranger reads: what to pass on to the owner, and nothing about the agent."""
    return (
        "This chat is not paired with an assistant yet. If you know its owner, send them this"
        f" code; it works for one hour:\n\n{code}\n\n"
        f"(They approve it with: clawpen pair approve {code} --agent AGENT_ID)"
    )
