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


def interactive(agent_id: str, ask: Ask, history: Path | None) -> None:
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
                print(f"{agent_id}> {inert(answer(ask, line))}", flush=True)
            except KeyboardInterrupt:
                print(file=sys.stderr)
                return


def piped(agent_id: str, ask: Ask) -> None:
    """Standard input is not a terminal: one message per line, clean output for scripts. A
    Ctrl-C (SIGINT) during an answer stops it; one while waiting for a line, or a second one,
    leaves."""
    try:
        for raw in sys.stdin:
            line = raw.rstrip("\n")
            if line.strip():
                print(f"{agent_id}> {shown(answer(ask, line))}", flush=True)
    except KeyboardInterrupt:
        return
