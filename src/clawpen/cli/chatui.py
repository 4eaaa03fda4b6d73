"""The terminal side of `clawpen chat`: line editing, pastes of any length, and replies that
cannot drive the terminal.

An agent's reply is text a model and a shell wrote: an escape sequence in it could move the
cursor, rewrite the screen or retitle the window. ``inert`` shows every control character as
visible text instead (``^[`` for ESC), keeping only newlines and tabs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

# C0 controls but \t and \n, DEL, and the C1 controls (which some terminals obey as ESC + x)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def inert(text: str) -> str:
    """``text`` with every terminal control character shown in caret notation, so printing it
    moves nothing: ``inert("\\x1b[2J")`` is ``"^[[2J"``."""

    def caret(match: re.Match[str]) -> str:
        code = ord(match.group())
        if code == 0x7F:
            return "^?"
        if code >= 0x80:
            return f"<U+{code:04X}>"
        return "^" + chr(code + 64)

    return _CONTROL.sub(caret, text)


Ask = Callable[[str], str]
More = Callable[[], str]
Decide = Callable[[str], str]  # the card's text -> what the person answers (y, n or a code)
_CODE_LINE = re.compile(r"^To (.+), reply with: ((?:ok|al|no)-[a-z0-9]{8})$", re.MULTILINE)


def card_codes(reply: str) -> dict[str, str]:
    """An approval card's buttons as ``{label: code}``; empty for any other reply."""
    if not reply.startswith("Approval needed: "):
        return {}
    return {label: code for label, code in _CODE_LINE.findall(reply)}


def code_for(answer: str, codes: dict[str, str]) -> str | None:
    """y/yes: the first Allow; n/no: Deny; a code as typed; None for anything else."""
    answer = answer.strip().lower()
    if answer in codes.values():
        return answer
    wanted = {"y": "ok-", "yes": "ok-", "n": "no-", "no": "no-", "a": "al-"}.get(answer)
    return next((c for c in codes.values() if wanted and c.startswith(wanted)), None)


def converse(line: str, ask: Ask, more: More, decide: Decide, show: Callable[[str], None]) -> None:
    """One message and its answer; an approval card on the way is shown and decided here
    (the card's own code is sent: the core reads it as this session's tap), then the answer
    that follows the decision is awaited."""
    reply = ask(line)
    show(reply)
    while codes := card_codes(reply):
        code = None
        while code is None:
            code = code_for(decide(reply), codes)
        show(ask(code))
        reply = more()
        show(reply)


def shown(text: str) -> str:
    """What to print of a reply: inert on a terminal; as it is into a pipe or a file."""
    return inert(text) if sys.stdout.isatty() else text


STOPPING = "(stopping the answer, as /stop does; Ctrl-C again leaves)"


def answer(ask: Ask, line: str) -> str:
    """The reply to ``line``. A Ctrl-C while it is awaited stops the agent's work for this
    conversation (``/stop``) and returns what the stopped work says; a second Ctrl-C raises
    ``KeyboardInterrupt`` out of here: the chat is left, the orchestrator goes on."""
    try:
        return ask(line)
    except KeyboardInterrupt:
        print(STOPPING, file=sys.stderr, flush=True)
        return ask("/stop")


def interactive(agent_id: str, ask: Ask, history: Path | None, more: More | None = None) -> None:
    """Read messages with prompt_toolkit until Ctrl-D (or Ctrl-C at the prompt): arrow keys and
    history edit the line, a paste arrives whole (newlines included), Esc then Enter starts a
    new line; a Ctrl-C during an answer stops it (``answer``)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.key_binding.key_processor import KeyPressEvent

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    if history is not None:
        history.touch(mode=0o600)  # what was typed may hold secrets: owner-only
        history.chmod(0o600)
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)) if history is not None else InMemoryHistory(),
        key_bindings=bindings,
        enable_history_search=True,
    )
    while True:
        try:
            line = session.prompt("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if line.strip():
            try:
                converse(
                    line,
                    partial(answer, ask),
                    more or (lambda: ""),
                    lambda card: session.prompt("allow? [y/n, or a code] "),
                    lambda text: print(f"{agent_id}> {inert(text)}", flush=True),
                )
            except KeyboardInterrupt:
                print(file=sys.stderr)
                return


def piped(agent_id: str, ask: Ask, more: More | None = None) -> None:
    """Standard input is not a terminal: one message per line, clean output for scripts; the
    line after an approval card is its decision (y, n or the code; none left: n). A Ctrl-C
    (SIGINT) during an answer stops it; one while waiting for a line, or a second one, leaves."""
    lines = (raw.rstrip("\n") for raw in sys.stdin)
    try:
        for line in lines:
            if line.strip():
                converse(
                    line,
                    partial(answer, ask),
                    more or (lambda: ""),
                    lambda card: next(lines, "n"),
                    lambda text: print(f"{agent_id}> {shown(text)}", flush=True),
                )
    except KeyboardInterrupt:
        return
